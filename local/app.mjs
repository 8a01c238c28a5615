// The demo Fly app every simulated Machine runs: the reference receiver at /internal/content-sync (exactly the
// code users mount) with catch-up on, a content store, a render cache that `invalidate` purges, and a few pages to
// read content back from. Content arrives by push; at boot (first start and every restart) and every interval the
// receiver reconciles with Sanity (the local Content Lake). Site settings are read only at boot — the case that
// needs a restart.
//
// The store (`store`): `memory` (the default: a restart reads everything again) or `sqlite` (a file that survives
// restarts, as on a Fly Volume: a restart catches up from its mark). With `litefs` the file is on a LiteFS mount
// (local/litefs.mjs): only the primary applies; a replica's content replicates from it and its receiver purges
// the cache once the change is there.
import {createReceiver, sqliteStore} from '../receiver/index.ts'

export const SYNC_PATH = '/internal/content-sync'

// Pushed documents carry the projected slug (a string); documents read from Sanity carry {current}.
const slugOf = (doc) => (typeof doc?.slug === 'object' && doc.slug !== null ? doc.slug.current : doc?.slug)

/** Documents kept in memory. */
function memoryContent() {
  const docs = new Map()
  return {
    get: (id) => docs.get(id),
    has: (id) => docs.has(id),
    put: (id, doc) => void docs.set(id, doc),
    delete: (id) => void docs.delete(id),
    values: () => docs.values(),
  }
}

/** Documents in the receiver's SQLite database, written in each change's transaction. */
function sqliteContent(db, writable) {
  if (writable) db.exec('CREATE TABLE IF NOT EXISTS content (id TEXT PRIMARY KEY, type TEXT NOT NULL, doc TEXT NOT NULL)')
  const exists = () => db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'content'").get() !== undefined
  const parse = (row) => (row ? JSON.parse(row.doc) : undefined)
  return {
    get: (id) => (exists() ? parse(db.prepare('SELECT doc FROM content WHERE id = ?').get(id)) : undefined),
    has: (id) => exists() && db.prepare('SELECT 1 FROM content WHERE id = ?').get(id) !== undefined,
    put: (id, doc) => void db.prepare('INSERT OR REPLACE INTO content (id, type, doc) VALUES (?, ?, ?)').run(id, doc._type, JSON.stringify(doc)),
    delete: (id) => void db.prepare('DELETE FROM content WHERE id = ?').run(id),
    values: () => (exists() ? db.prepare('SELECT doc FROM content').all().map(parse) : []),
  }
}

/**
 * @param {{id: string, region: string}} machine
 * @param {{secret: string, client: {fetch(q: string, p: object): Promise<unknown>}, types: string[],
 *          intervalSeconds: number, onApplied?: (machine, change, via: 'push' | 'catch-up') => void,
 *          store?: 'memory' | 'sqlite', storePath?: string, litefs?: {dir: string, primary: boolean}}} options
 *   `onApplied` is called when content is live on this Machine (settings go live at boot).
 */
export function createApp(machine, {secret, client, types, intervalSeconds, onApplied, store: kind = 'memory', storePath, litefs}) {
  const store = kind === 'sqlite' ? sqliteStore(storePath) : undefined
  const content = store ? sqliteContent(store.db, !litefs || litefs.primary) : memoryContent()
  /** path → what GET served last: purged by `invalidate` */
  const cache = new Map()
  let settings = null
  let booting = true

  const receive = createReceiver({
    secret,
    machineId: machine.id,
    ...(store ? {store} : {}),
    ...(litefs ? {litefs: {dir: litefs.dir}} : {}),
    apply(change) {
      if (change.op === 'delete') content.delete(change.id)
      else content.put(change.id, change.document)
      // Settings are read at boot: stored now, live after a restart — ask the Function for one.
      if (change.type === 'siteSettings' && !booting && change.target !== 'catch-up') return {restart: true}
    },
    invalidate(routes, _tags, change) {
      for (const route of routes) cache.delete(route)
      for (const [path, doc] of cache) if (doc?._id === change.id) cache.delete(path)
      if (change.type === 'siteSettings' && !booting) return
      // Catch-up payloads say so (docs/protocol.md); everything else was pushed by the Function.
      onApplied?.(machine, change, change.target === 'catch-up' ? 'catch-up' : 'push')
    },
    // The local Content Lake has no query-index lag and shares this clock: a short lag is enough here.
    catchUp: {client, types, intervalSeconds, lagSeconds: 10},
  })

  function find(type, slug) {
    for (const doc of content.values()) if (doc._type === type && (slug === undefined || slugOf(doc) === slug)) return doc
    return undefined
  }

  /** What GET `path` serves: the document shown there, or null (from the cache while it holds the path). */
  function read(path) {
    if (path === '/settings') return settings && {_id: settings._id, _rev: settings._rev, title: settings.title}
    if (cache.has(path)) return cache.get(path)
    const blog = path.match(/^\/blog\/(.+)$/)
    const doc = blog ? find('article', decodeURIComponent(blog[1])) : find('page', decodeURIComponent(path.slice(1)))
    const shown = doc ? {_id: doc._id, _rev: doc._rev, title: doc.title} : null
    if (shown) cache.set(path, shown)
    return shown
  }

  const json = (status, value) => Response.json(value, {status, headers: {'x-machine': machine.id}})

  return {
    machine,
    /** What this Machine holds: `has(id)`, `values()` (the documents). */
    docs: {has: (id) => content.has(id), values: () => content.values()},
    read,
    /**
     * Boot: the receiver's first run loads what changed since the stored mark (everything with the memory store, as
     * a real app loads from Sanity at start), then the settings are read. Returns that run.
     */
    async boot() {
      const first = await receive.ready
      if (first?.error) throw new Error(`boot: catch-up failed: ${first.error}`)
      booting = false
      settings = find('siteSettings') ?? null
      return first
    },
    close: () => {
      receive.close()
      store?.close()
    },
    /** @param {Request} request */
    async handle(request) {
      const url = new URL(request.url)
      if (url.pathname === SYNC_PATH) return receive(request)
      if (request.method !== 'GET') return json(405, {error: 'GET only'})
      const doc = read(url.pathname)
      return doc ? json(200, url.pathname === '/settings' ? {settings: doc} : doc) : json(404, {error: 'not found'})
    },
  }
}
