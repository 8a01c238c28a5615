// The demo Fly app every simulated Machine runs: the reference receiver at /internal/content-sync (exactly the
// code users mount) with catch-up on, an in-memory content store, and a few pages to read content back from.
// Content arrives by push; at boot (first start and every restart) and every interval the receiver reconciles
// with Sanity (the local Content Lake). Site settings are read only at boot — the case that needs a restart.
//
// Pages are rendered once and then served from a page cache, as a real app's full-route cache does: a post page
// shows its author's name and its category's title (referenced documents), and is tagged with its own document
// only (its id and cache tags). So an author's edit reaches the post pages only through the push's `invalidate`
// hook, which drops the cached pages at `routes.invalidate` and those tagged with any of `tags` — the routes and
// tags the Function adds for the documents that reference the author (its dependents).
//
// Live pages (`/live/blog/<slug>`) are rendered the way next-sanity's `sanityFetch` renders: a query to Sanity that
// also returns the response's sync tags, cached under those tags. The receiver's `syncTags` hook (the sync-tag
// Function's push) drops the live pages cached under any tag it names; nothing else does.
import {createReceiver} from '../receiver/index.ts'

export const SYNC_PATH = '/internal/content-sync'

// Pushed documents carry the projected slug (a string); documents read from Sanity carry {current}.
const slugOf = (doc) => (typeof doc?.slug === 'object' && doc.slug !== null ? doc.slug.current : doc?.slug)

/**
 * What the page of `doc` shows, the referenced documents looked up with `lookup(id)`: an article shows its
 * author's name and its category's title (null when the reference leads nowhere). The simulation renders the
 * same function over the Content Lake's documents to know what a fresh page shows.
 * @param {object} doc
 * @param {(id: string) => object | undefined | null} lookup
 */
export function renderPage(doc, lookup) {
  const page = {_id: doc._id, _rev: doc._rev, title: doc.title}
  if (doc._type === 'article') {
    page.author = (doc.author?._ref && lookup(doc.author._ref)?.name) ?? null
    page.category = (doc.category?._ref && lookup(doc.category._ref)?.title) ?? null
  }
  return page
}

/** What a live page queries: the post and, through references, its author and category (as renderPage shows them). */
export const LIVE_QUERY = `*[_type == "article"][slug.current == $slug][0]{_id, _rev, title, "author": author->name, "category": category->title}`

/** A push's `op`, read from its body (null when it is not JSON). */
function opOf(text) {
  try {
    return JSON.parse(text)?.op ?? null
  } catch {
    return null
  }
}

/** The tags a page is cached under: its own document's id and cache tags (not the documents it references). */
const pageTags = (doc) => new Set([doc._id, ...(Array.isArray(doc.cacheTags) ? doc.cacheTags : [])])

/**
 * @param {{id: string, region: string}} machine
 * @param {{secret: string, client: {fetch(q: string, p: object, o?: object): Promise<any>}, types: string[],
 *          intervalSeconds: number, onApplied?: (machine, change, via: 'push' | 'catch-up') => void,
 *          onInvalidated?: (machine, paths: string[], via: 'push' | 'catch-up' | 'tags') => void,
 *          onTagsAnswered?: (machine, answer: {at: number, status: number}) => void}} options
 *   `onApplied` is called when content is live on this Machine (settings go live at boot); `onInvalidated` when a
 *   hook dropped cached pages (the paths it dropped); `onTagsAnswered` when this Machine answered a sync-tag push
 *   (`at`: performance.now()).
 */
export function createApp(machine, {secret, client, types, intervalSeconds, onApplied, onInvalidated, onTagsAnswered}) {
  /** id → document, as this Machine holds it */
  const docs = new Map()
  /** path → {page, tags}: rendered pages, served until invalidated */
  const pages = new Map()
  /** path → {page, tags}: live pages (rendered from a query), cached under the query's sync tags */
  const livePages = new Map()
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
    invalidate(routes, tags, change) {
      const dropped = new Set()
      for (const path of routes) if (pages.delete(path)) dropped.add(path)
      for (const [path, cached] of pages) {
        if (tags.some((tag) => cached.tags.has(tag))) {
          pages.delete(path)
          dropped.add(path)
        }
      }
      if (dropped.size) onInvalidated?.(machine, [...dropped], change.target === 'catch-up' ? 'catch-up' : 'push')
    },
    syncTags(tags) {
      const dropped = []
      for (const [path, cached] of livePages) {
        if (tags.some((tag) => cached.tags.has(tag))) {
          livePages.delete(path)
          dropped.push(path)
        }
      }
      if (dropped.length) onInvalidated?.(machine, dropped, 'tags')
    },
    // The local Content Lake has no query-index lag and shares this clock: a short lag is enough here.
    catchUp: {client, types, intervalSeconds, lagSeconds: 10},
  })

  function find(type, slug) {
    for (const doc of docs.values()) if (doc._type === type && slugOf(doc) === slug) return doc
    return undefined
  }

  /** The document shown at `path`, from this Machine's store. */
  function documentAt(path) {
    const blog = path.match(/^\/blog\/(.+)$/)
    return blog ? find('article', decodeURIComponent(blog[1])) : find('page', decodeURIComponent(path.slice(1)))
  }

  /** What GET `path` serves: the cached page, else the page rendered now (and cached), or null. */
  function read(path) {
    if (path === '/settings') return settings && {_id: settings._id, _rev: settings._rev, title: settings.title}
    const cached = pages.get(path)
    if (cached) return structuredClone(cached.page)
    const doc = documentAt(path)
    if (!doc) return null
    const page = renderPage(doc, (id) => docs.get(id))
    pages.set(path, {page, tags: pageTags(doc)})
    return structuredClone(page)
  }

  /** What GET /live/blog/<slug> serves: the cached live page, else the query's answer (cached under its tags). */
  async function readLive(path) {
    const cached = livePages.get(path)
    if (cached) return structuredClone(cached.page)
    const slug = path.match(/^\/live\/blog\/(.+)$/)?.[1]
    if (!slug) return null
    const {result, syncTags} = await client.fetch(LIVE_QUERY, {slug: decodeURIComponent(slug)}, {filterResponse: false})
    if (!result) return null
    livePages.set(path, {page: result, tags: new Set(syncTags ?? [])})
    return structuredClone(result)
  }

  const json = (status, value) => Response.json(value, {status, headers: {'x-machine': machine.id}})

  return {
    machine,
    docs,
    pages,
    livePages,
    read,
    readLive,
    /** Boot: the receiver's first catch-up loads everything, as a real app loads from Sanity at start. */
    async boot() {
      const first = await receive.ready
      if (first?.error) throw new Error(`boot: catch-up failed: ${first.error}`)
      booting = false
    },
    close: () => receive.close(),
    /** Reconcile with Sanity now, off the interval (joins a run under way). */
    reconcile: () => receive.catchUp(),
    /** @param {Request} request */
    async handle(request) {
      const url = new URL(request.url)
      if (url.pathname === SYNC_PATH) {
        const tags = onTagsAnswered && request.method === 'POST' && opOf(await request.clone().text()) === 'tags'
        const response = await receive(request)
        if (tags) onTagsAnswered(machine, {at: performance.now(), status: response.status})
        return response
      }
      if (request.method !== 'GET') return json(405, {error: 'GET only'})
      if (url.pathname.startsWith('/live/')) {
        try {
          const page = await readLive(url.pathname)
          return page ? json(200, page) : json(404, {error: 'not found'})
        } catch (error) {
          return json(502, {error: `Sanity: ${error instanceof Error ? error.message : String(error)}`})
        }
      }
      const doc = read(url.pathname)
      return doc ? json(200, url.pathname === '/settings' ? {settings: doc} : doc) : json(404, {error: 'not found'})
    },
  }
}
