// The demo Fly app every simulated Machine runs: the reference receiver at /internal/content-sync (exactly the
// code users mount) with catch-up on, an in-memory content store, and a few pages to read content back from.
// Content arrives by push; at boot (first start and every restart) and every interval the receiver reconciles
// with Sanity (the local Content Lake). Site settings are read only at boot — the case that needs a restart.
import {createReceiver} from '../receiver/index.ts'

export const SYNC_PATH = '/internal/content-sync'

// Pushed documents carry the projected slug (a string); documents read from Sanity carry {current}.
const slugOf = (doc) => (typeof doc?.slug === 'object' && doc.slug !== null ? doc.slug.current : doc?.slug)

/**
 * @param {{id: string, region: string}} machine
 * @param {{secret: string, client: {fetch(q: string, p: object): Promise<unknown>}, types: string[],
 *          intervalSeconds: number, onApplied?: (machine, change, via: 'push' | 'catch-up') => void}} options
 *   `onApplied` is called when content is live on this Machine (settings go live at boot).
 */
export function createApp(machine, {secret, client, types, intervalSeconds, onApplied}) {
  /** id → document, as this Machine holds it */
  const docs = new Map()
  let settings = null
  let booting = true

  const receive = createReceiver({
    secret,
    machineId: machine.id,
    apply(change) {
      // Catch-up payloads say so (docs/protocol.md); everything else was pushed by the Function.
      const via = change.target === 'catch-up' ? 'catch-up' : 'push'
      if (change.op === 'delete') docs.delete(change.id)
      else docs.set(change.id, change.document)
      // Settings are read at boot: stored now, live after a restart — ask the Function for one.
      if (change.type === 'siteSettings') {
        if (booting) settings = change.document
        else if (via === 'push') return {restart: true}
        else return
      }
      onApplied?.(machine, change, via)
    },
    // The local Content Lake has no query-index lag and shares this clock: a short lag is enough here.
    catchUp: {client, types, intervalSeconds, lagSeconds: 10},
  })

  function find(type, slug) {
    for (const doc of docs.values()) if (doc._type === type && slugOf(doc) === slug) return doc
    return undefined
  }

  /** What GET `path` serves: the document shown there, or null. */
  function read(path) {
    if (path === '/settings') return settings && {_id: settings._id, _rev: settings._rev, title: settings.title}
    const blog = path.match(/^\/blog\/(.+)$/)
    const doc = blog ? find('article', decodeURIComponent(blog[1])) : find('page', decodeURIComponent(path.slice(1)))
    return doc ? {_id: doc._id, _rev: doc._rev, title: doc.title} : null
  }

  const json = (status, value) => Response.json(value, {status, headers: {'x-machine': machine.id}})

  return {
    machine,
    docs,
    read,
    /** Boot: the receiver's first catch-up loads everything, as a real app loads from Sanity at start. */
    async boot() {
      const first = await receive.ready
      if (first?.error) throw new Error(`boot: catch-up failed: ${first.error}`)
      booting = false
    },
    close: () => receive.close(),
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
