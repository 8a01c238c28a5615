// A local Fly app: one loopback HTTP server per Machine of the Machines API emulator, plus a proxy (the app URL)
// that routes like Fly's: `fly-force-instance-id` goes to that Machine or fails (no fallback), anything else goes
// to some serving Machine; each hop pays the Machine's region latency.
//
// The Machines *are* the emulator's Machines: their state comes from the emulator. A Machine serves only while it
// is `started` and its app has booted. Each boot is a new process: the fleet calls `handlerFor(machine)` again
// (in-memory state is gone) and then `onBoot(machine)` (load content from a store, as a real app does at boot),
// and only then serves. The emulator's health checks follow: they pass only while the Machine is serving.
import {createServer} from 'node:http'
import {EventEmitter} from 'node:events'
import {startMachinesApi} from './machines-api.mjs'

/** Headers a proxy does not pass on: the hop-by-hop ones, and those the forwarded request sets itself. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'host', 'content-length'])

export const DEFAULT_REGIONS = Object.freeze(['ord', 'fra', 'nrt'])
export const DEFAULT_LATENCY_MS = Object.freeze({ord: 5, fra: 40, nrt: 80})

/**
 * @typedef {object} MachineInfo  What `handlerFor` and `onBoot` get, once per boot.
 * @property {string} id
 * @property {string} region
 * @property {string} app
 * @property {number} boot  1 for the first boot, +1 for each restart/start
 * @property {Record<string, string>} env  FLY_MACHINE_ID, FLY_REGION, FLY_APP_NAME, FLY_MACHINE_VERSION, …
 */
/** @typedef {(request: Request) => Response | Promise<Response>} Handler */
/**
 * @typedef {object} AvailabilityEvent
 * @property {number} at  emulator clock ms
 * @property {boolean} up  serving and reachable
 * @property {string} cause  boot | state:<state> | unreachable | reachable | boot_failed
 */
/**
 * @typedef {object} ProxyLogEntry
 * @property {number} at
 * @property {string} method
 * @property {string} path
 * @property {string | null} forced  the fly-force-instance-id
 * @property {string | null} machine  where it went
 * @property {string | null} region
 * @property {number | null} status  null while in flight or when the client gave up
 * @property {number | null} ms
 * @property {string | null} error
 */

/**
 * @param {object} options
 * @param {string} [options.app]  default 'web'
 * @param {number | import('./machines-api.mjs').MachineSpec[]} [options.machines]  default 24
 * @param {string[]} [options.regions]  default ord, fra, nrt
 * @param {Record<string, number>} [options.latencyMs]  per region, added to each proxied request (real time)
 * @param {(machine: MachineInfo) => Handler | Promise<Handler>} [options.handlerFor]  default: echo `{machine, region, boot}`
 * @param {(machine: MachineInfo) => unknown} [options.onBoot]  awaited before the Machine serves
 * @param {Awaited<ReturnType<typeof startMachinesApi>>} [options.api]  an emulator to use; default: a new one (closed with the fleet)
 * @param {Parameters<typeof startMachinesApi>[0]} [options.apiOptions]  for the emulator the fleet starts
 * @param {string} [options.edgeRegion]  the region whose edge takes the requests (`Fly-Region`); default the first region
 * @param {number} [options.forceAttempts]  tries to reach a forced Machine that is started but not serving yet (default 3)
 * @param {number} [options.forceRetryDelayMs]  default 100
 * @param {number} [options.upstreamTimeoutMs]  the proxy gives up on a Machine after this long → 502 (default 30 000)
 */
export async function startFleet(options = {}) {
  const app = options.app ?? 'web'
  const regions = options.regions ?? [...DEFAULT_REGIONS]
  /** @type {Record<string, number>} */
  const latencyMs = {...DEFAULT_LATENCY_MS, ...options.latencyMs}
  const edgeRegion = options.edgeRegion ?? regions[0]
  const forceAttempts = options.forceAttempts ?? 3
  const forceRetryDelayMs = options.forceRetryDelayMs ?? 100
  const upstreamTimeoutMs = options.upstreamTimeoutMs ?? 30_000
  const handlerFor = options.handlerFor ?? echoHandler
  const onBoot = options.onBoot

  const ownsApi = !options.api
  const api = options.api ?? (await startMachinesApi({...options.apiOptions, apps: {[app]: {machines: options.machines ?? 24, regions}}}))
  if (!api.apps().includes(app)) api.addApp(app, {machines: options.machines ?? 24, regions})
  const now = () => api.clock.now()
  const events = new EventEmitter()
  events.setMaxListeners(0)

  /** @type {Map<string, any>} */
  const handles = new Map()
  /** @type {ProxyLogEntry[]} */
  const log = []
  const stats = {
    proxied: 0,
    /** @type {Record<string, number>} proxied requests per Machine */
    byMachine: {},
    /** @type {Record<string, number>} */
    statuses: {},
  }
  /** @type {Set<import('node:net').Socket>} */
  const proxySockets = new Set()
  /** @type {null | 'refuse' | '503'} */
  let appDown = null
  let closed = false

  // ---------- Machines ----------

  for (const m of api.machines(app)) {
    const h = {
      id: m.id,
      region: m.region,
      instanceId: m.instanceId,
      privateIp: m.privateIp,
      url: '',
      port: 0,
      /** @type {Handler | null} */
      handler: null,
      serving: false,
      /** @type {null | 'hang' | 'reset'} */
      unreachable: null,
      up: false,
      gen: 0,
      booting: false,
      boots: 0,
      /** @type {unknown} */
      bootError: null,
      /** @type {AvailabilityEvent[]} */
      availability: [{at: now(), up: false, cause: 'init'}],
      /** @type {Set<import('node:net').Socket>} */
      sockets: new Set(),
      /** @type {Set<import('node:http').ServerResponse>} */
      hanging: new Set(),
      server: /** @type {import('node:http').Server} */ (/** @type {unknown} */ (null)),
    }
    h.server = createServer((req, res) => serveMachine(h, req, res))
    h.server.on('connection', (socket) => {
      h.sockets.add(socket)
      socket.on('close', () => h.sockets.delete(socket))
      if (!h.serving && !h.unreachable) socket.destroy() // not serving: the connection is refused
      if (h.unreachable === 'reset') socket.destroy()
    })
    await listen(h.server, 0)
    h.port = /** @type {import('node:net').AddressInfo} */ (h.server.address()).port
    h.url = `http://127.0.0.1:${h.port}`
    handles.set(h.id, h)
  }

  /** @param {any} h */
  const envOf = (h) => ({
    FLY_APP_NAME: app,
    FLY_MACHINE_ID: h.id,
    FLY_ALLOC_ID: h.id,
    FLY_REGION: h.region,
    FLY_MACHINE_VERSION: h.instanceId,
    FLY_PRIVATE_IP: h.privateIp,
    FLY_PROCESS_GROUP: 'app',
    PORT: String(h.port),
  })

  /** Up = serving and reachable; record changes. @param {any} h @param {string} cause */
  function refreshUp(h, cause) {
    const up = h.serving && !h.unreachable
    if (up !== h.up) {
      h.up = up
      h.availability.push({at: now(), up, cause})
      events.emit('availability', {machine: h.id, region: h.region, up, cause, at: now()})
    }
    api.refreshChecks(h.id, cause)
  }

  /** The process of a boot has ended: a handler with `close()` (an external process) is told so. @param {any} handler */
  const retire = (handler) => Promise.resolve(handler?.close?.()).catch(() => undefined)

  /** A new process: fresh handler, then onBoot, then serve if still started. @param {any} h */
  async function startBoot(h) {
    const gen = ++h.gen
    h.booting = true
    retire(h.handler)
    h.handler = null
    h.serving = false
    refreshUp(h, 'booting')
    /** @type {MachineInfo} */
    const info = {id: h.id, region: h.region, app, boot: h.boots + 1, env: envOf(h)}
    try {
      const handler = await handlerFor(info)
      if (onBoot) await onBoot(info)
      if (gen !== h.gen || closed) return retire(handler)
      h.handler = handler
      h.boots++
      h.booting = false
      h.bootError = null
      if (api.state(h.id) === 'started') {
        h.serving = true
        refreshUp(h, 'boot')
      }
    } catch (e) {
      if (gen !== h.gen) return
      h.booting = false
      h.bootError = e
      refreshUp(h, 'boot_failed')
    }
  }

  /** @param {{app: string, machine: string, to: string}} change */
  function onState({app: a, machine, to}) {
    const h = handles.get(machine)
    if (a !== app || !h || closed) return
    if (to === 'suspending' || to === 'suspended') {
      // Suspended: not serving, but the process and its memory are kept in a snapshot — it resumes as it was.
      h.suspended = true
      h.serving = false
      for (const s of h.sockets) s.destroy()
      refreshUp(h, `state:${to}`)
    } else if (to === 'starting') {
      if (!(h.suspended && h.handler)) startBoot(h)
    } else if (to === 'started') {
      const resumed = h.suspended && h.handler
      h.suspended = false
      if (h.handler) {
        h.serving = true
        refreshUp(h, resumed ? 'resume' : 'boot')
      } else if (!h.booting) startBoot(h)
    } else {
      h.suspended = false
      // Stopping, stopped, failed…: the process is gone, and so are its connections.
      h.gen++
      h.booting = false
      retire(h.handler)
      h.handler = null
      h.serving = false
      for (const s of h.sockets) s.destroy()
      refreshUp(h, `state:${to}`)
    }
  }
  api.events.on('state', onState)

  /** @param {any} h @param {import('node:http').IncomingMessage} req @param {import('node:http').ServerResponse} res */
  async function serveMachine(h, req, res) {
    if (h.unreachable === 'hang') {
      h.hanging.add(res)
      res.on('close', () => h.hanging.delete(res))
      return
    }
    const handler = h.handler
    if (!h.serving || !handler || h.unreachable) {
      req.socket.destroy()
      return
    }
    const body = await readBody(req)
    /** @type {Response} */
    let response
    try {
      const headers = new Headers()
      for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v)
      const hasBody = !['GET', 'HEAD'].includes(req.method ?? 'GET') && body.length > 0
      const request = new Request(`http://${req.headers.host ?? `127.0.0.1:${h.port}`}${req.url}`, {method: req.method, headers, body: hasBody ? body : undefined})
      response = await handler(request)
    } catch (e) {
      response = Response.json({error: `handler error: ${e instanceof Error ? e.message : String(e)}`}, {status: 500})
    }
    await writeResponse(res, response)
  }

  // ---------- the proxy ----------

  let rr = 0
  /** Some serving Machine, nearest the edge first, passing checks first. */
  function pickMachine() {
    const candidates = [...handles.values()].filter((h) => h.up && api.state(h.id) === 'started')
    if (!candidates.length) return null
    const healthy = candidates.filter((h) => api.machine(h.id).checks !== 'critical')
    const pool = healthy.length ? healthy : candidates
    const local = pool.filter((h) => h.region === edgeRegion)
    const best = local.length ? local : pool.filter((h) => (latencyMs[h.region] ?? 0) === Math.min(...pool.map((p) => latencyMs[p.region] ?? 0)))
    return best[rr++ % best.length]
  }

  const proxy = createServer(async (req, res) => {
    const at = now()
    const url = new URL(req.url ?? '/', 'http://localhost')
    const forcedHeader = req.headers['fly-force-instance-id']
    const forced = typeof forcedHeader === 'string' ? forcedHeader : null
    /** @type {ProxyLogEntry} */
    const entry = {at, method: req.method ?? 'GET', path: url.pathname, forced, machine: null, region: null, status: null, ms: null, error: null}
    log.push(entry)
    stats.proxied++
    const requestId = `${Date.now().toString(36).toUpperCase()}${Math.random().toString(36).slice(2, 10).toUpperCase()}-${edgeRegion}`
    const reply = (/** @type {number} */ status, /** @type {string} */ error) => {
      entry.error = error
      return writeResponse(res, Response.json({error}, {status, headers: {'fly-request-id': requestId, server: 'Fly/local-proxy', via: '1.1 fly.io'}}), entry, at)
    }
    const body = await readBody(req)
    if (appDown === '503') return reply(503, `app ${app} is unavailable`)

    /** @type {any} */
    let h
    if (forced) {
      h = handles.get(forced)
      if (!h) return reply(503, `could not find machine ${forced} in app ${app} (fly-force-instance-id)`)
      // Fly: "will attempt to reach the Machine multiple times … no fallback if ultimately unavailable".
      for (let attempt = 1; !h.up && !h.unreachable && attempt < forceAttempts && api.state(h.id) === 'started'; attempt++) await sleep(forceRetryDelayMs)
      const state = api.state(h.id)
      if (state !== 'started') return reply(503, `machine ${forced} is ${state}; fly-force-instance-id does not fall back to another machine`)
      if (!h.up && !h.unreachable) return reply(502, `machine ${forced} is not accepting connections`)
    } else {
      h = pickMachine()
      if (!h) return reply(503, `no machine of app ${app} is available to serve the request`)
    }
    entry.machine = h.id
    entry.region = h.region
    stats.byMachine[h.id] = (stats.byMachine[h.id] ?? 0) + 1
    await sleep(latencyMs[h.region] ?? 0)

    const headers = new Headers()
    for (const [k, v] of Object.entries(req.headers)) if (!HOP_BY_HOP.has(k) && v !== undefined) headers.set(k, Array.isArray(v) ? v.join(', ') : v)
    headers.set('fly-region', edgeRegion)
    headers.set('fly-client-ip', req.socket.remoteAddress ?? '127.0.0.1')
    headers.set('x-forwarded-for', req.socket.remoteAddress ?? '127.0.0.1')
    headers.set('x-forwarded-proto', 'http')
    headers.set('fly-request-id', requestId)
    headers.append('via', '1.1 fly.io')
    const abort = new AbortController()
    const timer = setTimeout(() => abort.abort(new Error('upstream timeout')), upstreamTimeoutMs)
    const gone = () => res.writableFinished || abort.abort(new Error('client went away'))
    res.on('close', gone)
    try {
      const upstream = await fetch(`${h.url}${req.url}`, {
        method: req.method,
        headers,
        body: !['GET', 'HEAD'].includes(req.method ?? 'GET') && body.length ? body : undefined,
        signal: abort.signal,
        redirect: 'manual',
      })
      const buf = Buffer.from(await upstream.arrayBuffer())
      const out = new Headers(upstream.headers)
      out.delete('content-encoding')
      out.delete('content-length')
      out.set('fly-request-id', requestId)
      out.set('server', 'Fly/local-proxy')
      out.append('via', '1.1 fly.io')
      await writeResponse(res, new Response(upstream.status === 204 || upstream.status === 304 ? null : buf, {status: upstream.status, headers: out}), entry, at)
    } catch (e) {
      if (res.destroyed) {
        entry.error = 'client went away'
        entry.ms = now() - at
        return
      }
      const why = abort.signal.aborted ? String(abort.signal.reason?.message ?? 'aborted') : e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)
      await reply(502, `could not reach machine ${h.id}: ${why}`)
    } finally {
      clearTimeout(timer)
      res.off('close', gone)
    }
  })
  proxy.on('connection', (socket) => {
    proxySockets.add(socket)
    socket.on('close', () => proxySockets.delete(socket))
  })
  await listen(proxy, 0)
  const proxyPort = /** @type {import('node:net').AddressInfo} */ (proxy.address()).port

  /** @param {any} res @param {Response} response @param {ProxyLogEntry} [entry] @param {number} [at] */
  async function writeResponse(res, response, entry, at) {
    const buf = response.body ? Buffer.from(await response.arrayBuffer()) : null
    if (entry) {
      entry.status = response.status
      entry.ms = now() - /** @type {number} */ (at)
      stats.statuses[response.status] = (stats.statuses[response.status] ?? 0) + 1
    }
    if (res.destroyed) return
    /** @type {Record<string, string | string[]>} */
    const headers = {}
    for (const [k, v] of response.headers) if (k !== 'set-cookie') headers[k] = v
    const cookies = response.headers.getSetCookie()
    if (cookies.length) headers['set-cookie'] = cookies
    res.writeHead(response.status, headers)
    res.end(buf ?? undefined)
  }

  // Boot the Machines that are running now; from then on their checks pass only while they serve.
  await Promise.all(
    [...handles.values()].filter((h) => ['started', 'starting'].includes(api.state(h.id))).map((h) => startBoot(h)),
  )
  api.setHealthProbe(app, (id) => Boolean(handles.get(id)?.up))

  /** @param {any} h */
  const publicView = (h) => ({
    id: h.id,
    region: h.region,
    url: h.url,
    state: api.state(h.id),
    serving: h.serving,
    up: h.up,
    boots: h.boots,
    unreachable: h.unreachable,
    bootError: h.bootError ? String(h.bootError) : null,
  })
  /** @param {string} id */
  const must = (id) => {
    const h = handles.get(id)
    if (!h) throw new Error(`no machine ${id} in fleet ${app}`)
    return h
  }

  /** @param {any} h @param {number} [from] @param {number} [to] */
  function availabilityOf(h, from, to) {
    const end = to ?? now()
    /** @type {{from: number, to: number | null}[]} */
    const intervals = []
    for (const e of h.availability) {
      if (e.up) intervals.push({from: e.at, to: null})
      else if (intervals.length && intervals[intervals.length - 1].to === null) intervals[intervals.length - 1].to = e.at
    }
    const start = from ?? h.availability[0].at
    let upMs = 0
    for (const i of intervals) upMs += Math.max(0, Math.min(i.to ?? end, end) - Math.max(i.from, start))
    return {id: h.id, region: h.region, up: h.up, boots: h.boots, events: h.availability.map((/** @type {AvailabilityEvent} */ e) => ({...e})), intervals, upMs, downMs: Math.max(0, end - start - upMs)}
  }

  const faults = {
    /** The app URL refuses connections ('refuse') or answers 503 ('503'). @param {'refuse' | '503'} [mode] */
    async appDown(mode = 'refuse') {
      appDown = mode
      if (mode === 'refuse' && proxy.listening) {
        for (const s of proxySockets) s.destroy()
        await new Promise((resolve) => proxy.close(() => resolve(undefined)))
      }
    },
    async appUp() {
      appDown = null
      if (!proxy.listening && !closed) await listen(proxy, proxyPort)
    },
    /**
     * Requests to Machine `id` hang ('hang', until the client or the proxy's upstream timeout gives up) or have
     * their connection reset ('reset'). `hostStatus` also sets the emulator's host_status to unreachable.
     * @param {string} id @param {{mode?: 'hang' | 'reset', hostStatus?: boolean}} [o]
     */
    unreachable(id, o = {}) {
      const h = must(id)
      h.unreachable = o.mode ?? 'hang'
      if (h.unreachable === 'reset') for (const s of h.sockets) s.destroy()
      if (o.hostStatus) api.faults.unreachable(id, true)
      refreshUp(h, 'unreachable')
    },
    /** @param {string} id */
    reachable(id) {
      const h = must(id)
      h.unreachable = null
      for (const res of h.hanging) res.destroy()
      if (api.machine(id).hostStatus !== 'ok') api.faults.unreachable(id, false)
      refreshUp(h, 'reachable')
    },
    async clear() {
      for (const h of handles.values()) if (h.unreachable) faults.reachable(h.id)
      await faults.appUp()
    },
  }

  return {
    app,
    /** The app URL (the proxy). */
    url: `http://127.0.0.1:${proxyPort}`,
    api,
    events,
    /** Every proxied request. */
    log,
    stats,
    faults,
    latencyMs,
    edgeRegion,
    /** Snapshots of every Machine. */
    machines: () => [...handles.values()].map(publicView),
    /** @param {string} id */
    machine: (id) => publicView(must(id)),
    /** Fetch from one Machine directly (no proxy, no latency); rejects when it refuses. @param {string} id @param {string} [path] @param {RequestInit} [init] */
    fetchFrom: (id, path = '/', init = {}) => fetch(`${must(id).url}${path}`, init),
    /**
     * Read `path` from every Machine directly, in parallel (freshness probes). Refused or timed-out reads come
     * back with `error` set.
     * @param {string} path @param {{timeoutMs?: number, init?: RequestInit}} [o]
     */
    async readAll(path, o = {}) {
      return Promise.all(
        [...handles.values()].map(async (h) => {
          const base = {id: h.id, region: h.region, state: api.state(h.id), at: now()}
          try {
            const r = await fetch(`${h.url}${path}`, {...o.init, signal: AbortSignal.timeout(o.timeoutMs ?? 2_000)})
            const text = await r.text()
            /** @type {unknown} */
            let json
            try {
              json = JSON.parse(text)
            } catch {
              json = undefined
            }
            return {...base, ok: r.ok, status: r.status, body: text, json, error: null}
          } catch (e) {
            return {...base, ok: false, status: null, body: null, json: undefined, error: e instanceof Error ? (e.cause instanceof Error ? e.cause.message : e.message) : String(e)}
          }
        }),
      )
    },
    /** Availability of one Machine (or all, keyed by id) over [from, to] (default: since start, until now). @param {string} [id] @param {{from?: number, to?: number}} [o] */
    availability(id, o = {}) {
      if (id) return availabilityOf(must(id), o.from, o.to)
      return Object.fromEntries([...handles.values()].map((h) => [h.id, availabilityOf(h, o.from, o.to)]))
    },
    /** Resolve when Machine `id` is (or is not, with up: false) serving. @param {string} id @param {{up?: boolean, timeoutMs?: number}} [o] */
    waitUp(id, {up = true, timeoutMs = 10_000} = {}) {
      const h = must(id)
      if (h.up === up) return Promise.resolve(publicView(h))
      return new Promise((resolve, reject) => {
        const on = (/** @type {{machine: string, up: boolean}} */ e) => {
          if (e.machine !== id || e.up !== up) return
          events.off('availability', on)
          clearTimeout(timer)
          resolve(publicView(h))
        }
        const timer = setTimeout(() => {
          events.off('availability', on)
          reject(new Error(`machine ${id} not ${up ? 'up' : 'down'} within ${timeoutMs} ms`))
        }, timeoutMs)
        events.on('availability', on)
      })
    },
    async close() {
      if (closed) return
      closed = true
      api.events.off('state', onState)
      api.setHealthProbe(app, null)
      const servers = [proxy, ...[...handles.values()].map((h) => h.server)]
      for (const h of handles.values()) {
        for (const res of h.hanging) res.destroy()
        for (const s of h.sockets) s.destroy()
      }
      for (const s of proxySockets) s.destroy()
      await Promise.all([...handles.values()].map((h) => retire(h.handler)))
      await Promise.all(servers.map((s) => (s.listening ? new Promise((resolve) => s.close(() => resolve(undefined))) : undefined)))
      if (ownsApi) await api.close()
    },
  }
}

/** @param {MachineInfo} machine @returns {Handler} */
function echoHandler(machine) {
  return (request) => Response.json({machine: machine.id, region: machine.region, boot: machine.boot, path: new URL(request.url).pathname})
}

/** @param {import('node:http').Server} server @param {number} port */
function listen(server, port) {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve(undefined)
    })
  })
}

/** @param {import('node:http').IncomingMessage} req */
async function readBody(req) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  return Buffer.concat(chunks)
}

/** @param {number} ms */
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
