// A loopback stand-in for the Fly Machines API and the app's receiver, on one node:http server. It lists a
// fixed fleet, answers each sync POST with the ack of the Machine named in `fly-force-instance-id` (as Fly's
// proxy would route it), and records every request. Tests point FLY_API_URL and FLY_APP_URL at `url`.
import {createServer} from 'node:http'

export const APP = 'my-fly-app' // sanity.blueprint.ts's example FLY_APP_NAME
export const SYNC_PATH = '/internal/content-sync'

/** Two started Machines in two regions and one stopped Machine (which must get nothing). */
export const FLEET = [
  {id: '3d8d413b29d089', region: 'ord', state: 'started'},
  {id: '91852e3f4e1d87', region: 'ams', state: 'started'},
  {id: '5683945bd11e8e', region: 'nrt', state: 'stopped'},
]

/**
 * @param {{fleet?: {id: string, region: string, state: string}[]}} [options]
 * @returns {Promise<{url: string, requests: {method: string, url: string, headers: Record<string, string|string[]|undefined>, body: string}[], syncs: () => any[], reset: () => void, close: () => Promise<void>}>}
 */
export async function startFlyStandIn({fleet = FLEET} = {}) {
  const requests = []
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
        fleet.map((m) => ({...m, host_status: 'ok', config: {metadata: {fly_process_group: 'app'}}, checks: []})),
      )
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
    /** Forget what arrived so far (between cases that share one stand-in). */
    reset: () => void requests.splice(0),
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
