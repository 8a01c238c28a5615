// The demo Fly app every simulated Machine runs: the reference receiver at /internal/content-sync (exactly the
// code users mount), an in-memory content store, and a few pages to read content back from. Content arrives by
// push; at boot (first start and every restart) the app loads everything from its content source, as a real app
// loads from Sanity or a volume. Site settings are read only at boot — the case that needs a restart.
import {createReceiver} from '../receiver/index.ts'

export const SYNC_PATH = '/internal/content-sync'

/**
 * @param {{id: string, region: string}} machine
 * @param {{secret: string, source: {snapshot(): Promise<object[]>}, onApplied?: (machine, change) => void}} options
 *   `onApplied` is called when pushed content is live on this Machine (settings only go live at boot).
 */
export function createApp(machine, {secret, source, onApplied}) {
  /** id → document, as this Machine holds it */
  const docs = new Map()
  let settings = null
  let booted = 0

  const receive = createReceiver({
    secret,
    machineId: machine.id,
    apply(change) {
      if (change.op === 'delete') docs.delete(change.id)
      else docs.set(change.id, change.document)
      // Settings are read at boot: stored now, live after a restart — ask the Function for one.
      if (change.type === 'siteSettings') return {restart: true}
      onApplied?.(machine, change)
    },
  })

  // Pushed documents carry the projected slug (a string); documents loaded at boot carry Sanity's {current}.
  const slugOf = (doc) => (typeof doc.slug === 'object' && doc.slug !== null ? doc.slug.current : doc.slug)
  function find(type, slug) {
    for (const doc of docs.values()) if (doc._type === type && slugOf(doc) === slug) return doc
    return undefined
  }

  const json = (status, value) => Response.json(value, {status, headers: {'x-machine': machine.id}})

  return {
    machine,
    /** Load everything from the source, as at boot. */
    async boot() {
      const all = await source.snapshot()
      docs.clear()
      for (const doc of all) docs.set(doc._id, doc)
      settings = all.find((d) => d._type === 'siteSettings') ?? null
      booted += 1
    },
    get boots() {
      return booted
    },
    docs,
    /** @param {Request} request */
    async handle(request) {
      const url = new URL(request.url)
      if (url.pathname === SYNC_PATH) return receive(request)
      if (request.method !== 'GET') return json(405, {error: 'GET only'})
      if (url.pathname === '/settings') return json(200, {settings: settings && {_rev: settings._rev, title: settings.title}})
      const blog = url.pathname.match(/^\/blog\/(.+)$/)
      const doc = blog ? find('article', decodeURIComponent(blog[1])) : find('page', decodeURIComponent(url.pathname.slice(1)))
      return doc ? json(200, {_id: doc._id, _rev: doc._rev, title: doc.title}) : json(404, {error: 'not found'})
    },
  }
}
