// A loopback stand-in for the Fly Machines API and the app's receiver, on one node:http server. It lists a
// fixed fleet, answers each sync POST with the ack of the Machine named in `fly-force-instance-id` (as Fly's
// proxy would route it), and records every request. Tests point FLY_API_URL and FLY_APP_URL at `url`.
// Machine metadata beyond `fly_process_group` is what a test seeds (`seedMetadata`), shown in the list under
// `config.metadata` and removed by `DELETE …/machines/<id>/metadata/<key>` (204, as Fly answers); none by default.
import {createServer} from 'node:http'

export const APP = 'my-fly-app' // sanity.blueprint.ts's example FLY_APP_NAME
export const SYNC_PATH = '/internal/content-sync'

/** An article as a Function event's data carries it (the blueprint's projection), with `extra` fields over it. */
export const article = (extra = {}) => ({
  _id: 'article-9',
  _type: 'article',
  _rev: 'rev-1',
  _updatedAt: '2026-11-27T10:00:00Z',
  op: 'update',
  title: 'Hello',
  slug: 'hello',
  ...extra,
})

/** Two started Machines in two regions and one stopped Machine (which must get nothing). */
export const FLEET = [
  {id: '3d8d413b29d089', region: 'ord', state: 'started'},
  {id: '91852e3f4e1d87', region: 'ams', state: 'started'},
  {id: '5683945bd11e8e', region: 'nrt', state: 'stopped'},
]

/**
 * @param {{fleet?: {id: string, region: string, state: string}[]}} [options]
 * @returns {Promise<{url: string, requests: {method: string, url: string, headers: Record<string, string|string[]|undefined>, body: string}[], syncs: () => any[], seedMetadata: (machine: string, key: string, value: string) => void, metadata: (machine: string) => Record<string, string>, reset: () => void, close: () => Promise<void>}>}
 */
export async function startFlyStandIn({fleet = FLEET} = {}) {
  const requests = []
  /** Seeded metadata per Machine id: `{key: value}`. */
  const metadata = new Map()
  const metadataPath = new RegExp(`^/v1/apps/${APP}/machines/([^/?]+)/metadata/([^/?]+)$`)
  const server = createServer(async (req, res) => {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    const record = {method: req.method, url: req.url, headers: req.headers, body: Buffer.concat(chunks).toString('utf8')}
    requests.push(record)
    const reply = (status, value) => {
      res.writeHead(status, {'content-type': 'application/json'})
      res.end(JSON.stringify(value))
    }
    if (req.method === 'GET' && req.url === `/v1/apps/${APP}/machines`) {
      return reply(
        200,
        fleet.map((m) => ({...m, host_status: 'ok', config: {metadata: {fly_process_group: 'app', ...metadata.get(m.id)}}, checks: []})),
      )
    }
    const key = req.method === 'DELETE' && metadataPath.exec(req.url)
    if (key) {
      const [, machine, name] = key
      if (!fleet.some((m) => m.id === machine)) return reply(404, {error: 'machine not found'})
      delete metadata.get(machine)?.[name]
      res.writeHead(204).end()
      return
    }
    if (req.method === 'POST' && req.url === SYNC_PATH) {
      const machine = req.headers['fly-force-instance-id']
      if (!fleet.some((m) => m.id === machine && m.state === 'started')) return reply(503, {error: 'no such Machine'})
      return reply(200, {protocol: 'sanity-fly-sync/1', machine, status: 'applied', restart: null})
    }
    reply(404, {error: `stand-in: no route for ${req.method} ${req.url}`})
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const {port} = server.address()
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    /** The sync POSTs, bodies parsed, in arrival order. */
    syncs: () =>
      requests
        .filter((r) => r.method === 'POST' && r.url === SYNC_PATH)
        .map((r) => ({headers: r.headers, raw: r.body, body: JSON.parse(r.body)})),
    /** Give a Machine of the fleet a metadata key, shown in the list until deleted or `reset`. */
    seedMetadata: (machine, key, value) => {
      if (!fleet.some((m) => m.id === machine)) throw new Error(`stand-in: no Machine ${machine} in the fleet`)
      metadata.set(machine, {...metadata.get(machine), [key]: value})
    },
    /** A Machine's seeded metadata as it stands now (a copy). */
    metadata: (machine) => ({...metadata.get(machine)}),
    /** Forget what arrived so far and what was seeded (between cases that share one stand-in). */
    reset: () => {
      requests.splice(0)
      metadata.clear()
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
