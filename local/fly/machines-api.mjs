// A local Fly.io Machines API on loopback, for tests and the simulation: Fly's endpoints, leases, rate limits,
// Machine states and tokens as Fly documents them and as its own clients (flyctl, fly-go) use them.
//
// Every request is routed and validated against Fly's OpenAPI document by openapi-backend (./spec.mjs); what the
// spec leaves out (the lease nonce, force_stop, error bodies, the lease envelope) follows Fly's documentation and
// what fly-go sends and reads.
// Per request: auth (401) → spec validation (400) → app (404) → Machine (404) → scripted fault → rate limit (429)
// → the operation. Machines move through states on the clock with configurable delays; every request is logged
// and every state change lands in a per-Machine timeline.
import {createServer} from 'node:http'
import {EventEmitter} from 'node:events'
import {createHash} from 'node:crypto'
import {realClock} from './clock.mjs'
import {sharedBackend, describeValidationErrors} from './spec.mjs'
import {mulberry32} from '../random.mjs'

/** @typedef {import('./clock.mjs').Clock} Clock */

/** The token accepted for every app when `tokens` is not given. */
export const DEFAULT_TOKEN = 'fm2_local_fly_emulator_token'

/**
 * Delays are a number of ms or a [min, max] range drawn per transition (seeded). A restart is one stop plus one
 * start: 300–800 ms by default.
 */
export const DEFAULT_TIMINGS = Object.freeze({
  /** started → stopping → stopped; also the first half of a restart. */
  stopMs: /** @type {number | [number, number]} */ ([100, 300]),
  /** starting → started; also the second half of a restart. */
  startMs: /** @type {number | [number, number]} */ ([200, 500]),
  /** Health checks stay `critical` this long after each start, then pass. */
  checksCriticalMs: 300,
  /** Added (real time) before every API answer: ms, or `[min, max]` drawn per request (seeded). */
  apiLatencyMs: /** @type {number | [number, number]} */ (0),
  /** TTL of a lease acquired without `ttl` (Fly's default is undocumented). */
  defaultLeaseTtlS: 30,
  /** `/wait` blocks at most this long (Fly: 60 s). */
  maxWaitS: 60,
})

/**
 * Token buckets per (Machine, action) — per app for `list` — as Fly's documentation states its limits: 1/s with
 * bursts of 3 per action, `get` 5/s with bursts of 10.
 * `retryAfter`: send `Retry-After` (whole seconds until a token) on 429s; unverified for Fly, so off by default.
 */
export const DEFAULT_RATE_LIMITS = Object.freeze({
  default: {rate: 1, burst: 3},
  actions: /** @type {Record<string, {rate: number, burst: number}>} */ ({get: {rate: 5, burst: 10}}),
  retryAfter: false,
})

/** operationId → the action name used in logs, stats, rate limits and fault rules. */
export const ACTIONS = Object.freeze({
  Machines_list: 'list',
  Machines_show: 'get',
  Machines_restart: 'restart',
  Machines_start: 'start',
  Machines_stop: 'stop',
  Machines_wait: 'wait',
  Machines_create_lease: 'lease',
  Machines_show_lease: 'lease_get',
  Machines_release_lease: 'release',
  Machines_show_metadata: 'metadata_get',
  Machines_get_metadata_key: 'metadata_key_get',
  Machines_upsert_metadata: 'metadata_set',
  Machines_delete_metadata: 'metadata_delete',
})

/** Fly's transient Machine states (`settled` = anything else). */
export const TRANSIENT_STATES = new Set(['creating', 'starting', 'stopping', 'restarting', 'suspending', 'destroying', 'updating', 'replacing', 'launch_failed'])

const REGIONS = ['ord', 'fra', 'nrt']
const CHECK_NAME = 'servicecheck-00-http-8080'
const OTHER_OWNER = '9af60c27-ee17-55df-bb0a-4f369e59839a@tokens.fly.io'
const CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
const ADJECTIVES = ['aged', 'bold', 'calm', 'dark', 'eager', 'fancy', 'green', 'hidden', 'icy', 'jolly', 'late', 'misty', 'proud', 'quiet', 'red', 'shy', 'tiny', 'wild']
const NOUNS = ['wind', 'sea', 'leaf', 'moon', 'river', 'snow', 'star', 'cloud', 'field', 'forest', 'lake', 'hill', 'rain', 'sun', 'tree', 'wave']
const DEFAULT_ERRORS = /** @type {Record<number, string>} */ ({
  408: 'deadline_exceeded: request timed out',
  429: 'rate limit exceeded',
  500: 'internal: an internal error occurred',
  502: 'unavailable: bad gateway',
  503: 'unavailable: service temporarily unavailable',
  504: 'deadline_exceeded: gateway timeout',
})

/**
 * @typedef {object} MachineSpec
 * @property {string} [id]  14 hex chars; generated when absent
 * @property {string} [name]
 * @property {string} [region]
 * @property {string} [state]  initial state, default `started`
 * @property {boolean} [checks]  has a service check (default true)
 * @property {string} [processGroup]  config.metadata.fly_process_group, default `app`
 * @property {Record<string, string>} [metadata]  extra metadata
 * @property {'ok' | 'unknown' | 'unreachable'} [hostStatus]
 */
/** @typedef {{machines?: number | MachineSpec[], regions?: string[]} | MachineSpec[] | number} AppSpec */
/**
 * @typedef {object} FaultRule  A scripted answer for matching requests, served before rate limits and the operation.
 * @property {string | string[]} action  an action name (see ACTIONS) or '*'
 * @property {string} [machine]  only this Machine (default: any)
 * @property {string} [app]
 * @property {number} [status]  default 503
 * @property {string} [error]  the `error` message (default per status)
 * @property {unknown} [body]  a whole body instead of `{error}`
 * @property {Record<string, string>} [headers]
 * @property {number} [retryAfter]  seconds, sent as `Retry-After`
 * @property {number} [times]  how many requests it answers (default 1; Infinity for all)
 * @property {boolean} [perform]  run the operation anyway, then answer with this (an ambiguous answer)
 * @property {number} [delayMs]  answer this much later (real time)
 * @property {boolean} [hang]  never answer (until the client gives up or the emulator closes)
 * @property {string} [label]  shown in the request log
 */
/**
 * @typedef {object} LogEntry
 * @property {number} at  when the request arrived (clock ms)
 * @property {string} id  the fly-request-id
 * @property {string} method
 * @property {string} path  without the query
 * @property {string} query  the raw query string ('' when none)
 * @property {string | null} app
 * @property {string | null} machine
 * @property {string | null} action
 * @property {number | null} status  null while in flight
 * @property {number | null} ms  duration
 * @property {number | null} endedAt  when the answer was written or the client went away (clock ms); null while open
 * @property {string | null} error  the `error` of an error answer
 * @property {string | null} fault  the label of the fault rule that answered, or 'rate_limit'
 */
/**
 * @typedef {object} TimelineEntry
 * @property {number} seq  position in the emulator's one state log (orders entries that share an `at`)
 * @property {number} at
 * @property {string} app
 * @property {string} machine
 * @property {string} region
 * @property {string} state
 * @property {'passing' | 'critical' | 'none'} checks
 * @property {string} host  host_status
 * @property {string} cause  init | restart | start | stop | checks | fault | control | …
 */
/**
 * @typedef {object} LeaseRecord  One lease as the emulator granted it, from acquisition to its end.
 * @property {string} app
 * @property {string} machine
 * @property {string} owner  the `…@tokens.fly.io` owner (one per token)
 * @property {string} description
 * @property {'api' | 'fault'} source  granted through `POST …/lease`, or put there by `faults.leaseHeldElsewhere`
 * @property {number} acquiredAt  clock ms
 * @property {number} expiresAt  clock ms, moved by each refresh
 * @property {number} refreshes
 * @property {number | null} refreshedAt  clock ms of the last refresh (null: never refreshed)
 * @property {number | null} releasedAt  when `DELETE …/lease` released it
 * @property {'held' | 'released' | 'expired'} end  as of the read: released by DELETE, past its TTL, or still held
 */

/**
 * Start the emulator on 127.0.0.1.
 *
 * @param {object} [options]
 * @param {Record<string, AppSpec> | string[]} [options.apps]  default `{web: {machines: 3}}`
 * @param {Record<string, string[] | '*'>} [options.tokens]  token (scheme optional) → apps it may use; default `{[DEFAULT_TOKEN]: '*'}`
 * @param {Clock} [options.clock]
 * @param {FaultRule[]} [options.faults]  rules active from the start
 * @param {Partial<typeof DEFAULT_TIMINGS>} [options.timings]
 * @param {false | {default?: {rate: number, burst: number}, actions?: Record<string, {rate: number, burst: number}>, retryAfter?: boolean, enabled?: boolean}} [options.rateLimits]
 * @param {number} [options.port]  0 (default) for any free port
 * @param {number} [options.seed]  seeds ids, nonces and drawn delays (default 1)
 */
export async function startMachinesApi(options = {}) {
  const clock = options.clock ?? realClock
  const timings = {...DEFAULT_TIMINGS, ...options.timings}
  const limits = rateLimitConfig(options.rateLimits)
  const random = mulberry32(options.seed ?? 1)
  const backend = await sharedBackend()
  const events = new EventEmitter()
  events.setMaxListeners(0)

  /** @type {Map<string, string[] | '*'>} */
  const tokens = new Map(Object.entries(options.tokens ?? {[DEFAULT_TOKEN]: '*'}).map(([t, apps]) => [bareToken(t), apps]))
  /** @type {Map<string, Map<string, any>>} app → id → machine */
  const apps = new Map()
  /** @type {Map<string, any>} id → machine (ids are unique across apps) */
  const byId = new Map()
  /** @type {Map<string, (id: string) => boolean>} */
  const healthProbes = new Map()
  /** @type {FaultRule[] & {hits?: number}[]} */
  const rules = []
  /** @type {Map<string, {tokens: number, last: number}>} */
  const buckets = new Map()
  /** @type {LogEntry[]} */
  const log = []
  /** @type {TimelineEntry[]} */
  const stateLog = []
  /** @type {Omit<LeaseRecord, 'end'>[]} every lease ever granted, oldest first */
  const leaseLog = []
  /** @type {Set<import('node:http').ServerResponse>} */
  const hanging = new Set()
  const stats = {
    requests: 0,
    /** @type {Record<string, number>} requests per action ('none' when no operation matched) */
    calls: {},
    /** @type {Record<string, number>} */
    statuses: {},
    /** @type {Record<string, number>} 429s from the token buckets, per action */
    rateLimited: {},
    rateLimitedTotal: 0,
    /** @type {Record<string, number>} answers from fault rules, per action */
    faults: {},
    /** @type {Record<string, Record<string, number>>} machine → action → requests */
    byMachine: {},
  }
  let closed = false

  const now = () => clock.now()
  const draw = (/** @type {number | [number, number]} */ v) => (Array.isArray(v) ? Math.round(v[0] + random() * (v[1] - v[0])) : v)
  const hex = (/** @type {number} */ n) => Array.from({length: n}, () => Math.floor(random() * 16).toString(16)).join('')
  const ulid = (/** @type {number} */ ms = now()) => {
    let t = ''
    for (let i = 0, v = ms; i < 10; i++, v = Math.floor(v / 32)) t = CROCKFORD[v % 32] + t
    return t + Array.from({length: 16}, () => CROCKFORD[Math.floor(random() * 32)]).join('')
  }

  // ---------- Machines ----------

  /** @param {string} app @param {MachineSpec} spec @param {number} index @param {string[]} regions */
  function createMachine(app, spec, index, regions) {
    let id = spec.id ?? hex(14)
    while (!spec.id && byId.has(id)) id = hex(14)
    if (byId.has(id)) throw new Error(`machine id ${id} is used twice`)
    const createdAt = now() - 3_600_000
    const state = spec.state ?? 'started'
    const m = {
      app,
      id,
      name: spec.name ?? `${ADJECTIVES[Math.floor(random() * ADJECTIVES.length)]}-${NOUNS[Math.floor(random() * NOUNS.length)]}-${1000 + Math.floor(random() * 9000)}`,
      region: spec.region ?? regions[index % regions.length],
      state,
      instanceId: ulid(createdAt),
      privateIp: `fdaa:0:18:a7b:${hex(3)}:${hex(4)}:${hex(4)}:2`,
      createdAt,
      updatedAt: createdAt + 2_000,
      metadata: {fly_platform_version: 'v2', fly_process_group: spec.processGroup ?? 'app', fly_release_id: 'Rel_local', fly_release_version: '1', ...spec.metadata},
      hasChecks: spec.checks ?? true,
      /** @type {any[]} oldest first */
      events: [],
      checksPassingAt: createdAt + 2_000,
      checksUpdatedAt: createdAt + 2_000,
      /** @type {'passing' | 'critical' | 'none'} */
      lastChecks: 'none',
      hostStatus: spec.hostStatus ?? 'ok',
      /** @type {{nonce: string, owner: string, description: string, expiresAtMs: number} | null} */
      lease: null,
      /** @type {unknown} */
      timer: null,
      /** @type {unknown} */
      checksTimer: null,
      /** @type {{failAfterMs: number | null, times: number} | null} */
      stuck: null,
      checksStuck: false,
      /** @type {Set<() => void>} */
      watchers: new Set(),
      counts: {restarts: 0, starts: 0, stops: 0},
      /** @type {TimelineEntry | null} */
      lastEntry: null,
    }
    m.events.push(event(createdAt, 'launch', 'created', 'user'))
    if (state !== 'created') m.events.push(event(createdAt + 1_000, 'start', 'started', 'flyd'))
    if (['stopped', 'suspended', 'failed', 'destroyed'].includes(state)) m.events.push(event(createdAt + 1_500, 'exit', state === 'suspended' ? 'suspended' : state, 'flyd'))
    m.lastChecks = checksStatus(m)
    return m
  }

  /** @param {number} at @param {string} type @param {string} status @param {string} source @param {object} [request] */
  function event(at, type, status, source, request) {
    return {id: ulid(at), type, status, source, timestamp: at, ...(request ? {request} : {})}
  }

  /** @param {string} name @param {AppSpec} [spec] */
  function addApp(name, spec = {}) {
    if (apps.has(name)) throw new Error(`app ${name} exists`)
    const s = typeof spec === 'number' ? {machines: spec} : Array.isArray(spec) ? {machines: spec} : spec
    const regions = s.regions ?? REGIONS
    const specs = typeof s.machines === 'number' || s.machines === undefined ? Array.from({length: s.machines ?? 3}, () => ({})) : s.machines
    const machines = new Map()
    apps.set(name, machines)
    specs.forEach((ms, i) => {
      const m = createMachine(name, ms, i, regions)
      machines.set(m.id, m)
      byId.set(m.id, m)
      record(m, 'init')
    })
    return [...machines.values()].map(view)
  }

  /** @param {any} m @returns {'passing' | 'critical' | 'none'} */
  function checksStatus(m) {
    if (!m.hasChecks) return 'none'
    const probe = healthProbes.get(m.app)
    const ok = m.state === 'started' && now() >= m.checksPassingAt && !m.checksStuck && (!probe || probe(m.id))
    return ok ? 'passing' : 'critical'
  }

  /** Append a timeline entry when state, checks or host status changed; wake watchers. @param {any} m @param {string} cause */
  function record(m, cause) {
    const checks = checksStatus(m)
    if (checks !== m.lastChecks) {
      m.lastChecks = checks
      m.checksUpdatedAt = now()
      events.emit('checks', {app: m.app, machine: m.id, checks, at: now()})
    }
    const last = lastEntry(m.id)
    if (!last || last.state !== m.state || last.checks !== checks || last.host !== m.hostStatus) {
      /** @type {TimelineEntry} */
      const entry = {seq: stateLog.length, at: now(), app: m.app, machine: m.id, region: m.region, state: m.state, checks, host: m.hostStatus, cause}
      stateLog.push(entry)
      m.lastEntry = entry
    }
    for (const w of [...m.watchers]) w()
  }
  const lastEntry = (/** @type {string} */ id) => byId.get(id)?.lastEntry ?? null

  /** @param {any} m @param {string} to @param {string} cause @param {object | null} [ev] */
  function setState(m, to, cause, ev) {
    const from = m.state
    m.state = to
    m.updatedAt = now()
    if (ev) m.events.push(ev)
    clock.clearTimeout(m.checksTimer)
    m.checksTimer = null
    if (to === 'started') {
      m.checksPassingAt = now() + timings.checksCriticalMs
      if (timings.checksCriticalMs > 0) {
        m.checksTimer = clock.setTimeout(() => {
          m.checksTimer = null
          m.checksPassingAt = Math.min(m.checksPassingAt, now()) // Date.now() may lag the timer by a millisecond
          record(m, 'checks')
        }, timings.checksCriticalMs)
      }
    }
    record(m, cause)
    events.emit('state', {app: m.app, machine: m.id, region: m.region, from, to, at: now(), cause})
  }

  /** Schedule the Machine's next transition, replacing any pending one. @param {any} m @param {number} ms @param {() => void} fn */
  function later(m, ms, fn) {
    clock.clearTimeout(m.timer)
    m.timer = clock.setTimeout(() => {
      m.timer = null
      if (!closed) fn()
    }, ms)
  }
  const cancel = (/** @type {any} */ m) => {
    clock.clearTimeout(m.timer)
    m.timer = null
  }

  /** starting → started, unless a `stuck` fault holds it in `starting` (→ `failed` after failAfterMs). @param {any} m @param {string} cause */
  function boot(m, cause) {
    if (m.stuck) {
      const {failAfterMs} = m.stuck
      if (--m.stuck.times <= 0) m.stuck = null
      if (failAfterMs != null) {
        later(m, failAfterMs, () =>
          setState(m, 'failed', 'fault', event(now(), 'exit', 'failed', 'flyd', {exit_event: exitEvent({exit_code: 1, requested_stop: false})})),
        )
      } else {
        cancel(m)
      }
      return
    }
    later(m, draw(timings.startMs), () => setState(m, 'started', cause, event(now(), 'start', 'started', 'flyd')))
  }

  /** @param {object} fields */
  function exitEvent(fields) {
    return {exit_code: 0, guest_exit_code: 0, guest_signal: -1, oom_killed: false, requested_stop: true, restarting: false, signal: -1, exited_at: rfc3339(now()), ...fields}
  }

  /** @param {any} m @param {string} [cause] */
  function doRestart(m, cause = 'restart') {
    m.counts.restarts++
    setState(m, 'stopping', cause, event(now(), 'restart', 'stopping', 'user'))
    later(m, draw(timings.stopMs), () => {
      setState(m, 'starting', cause, event(now(), 'start', 'starting', 'flyd'))
      boot(m, cause)
    })
  }
  /** @param {any} m @param {string} [cause] */
  function doStart(m, cause = 'start') {
    m.counts.starts++
    setState(m, 'starting', cause, event(now(), 'start', 'starting', 'user'))
    boot(m, cause)
  }
  /** @param {any} m @param {string} [cause] */
  function doStop(m, cause = 'stop') {
    m.counts.stops++
    const stopped = () => setState(m, 'stopped', cause, event(now(), 'exit', 'stopped', 'flyd', {exit_event: exitEvent({})}))
    if (m.state === 'suspended') {
      cancel(m)
      stopped() // the snapshot is discarded: the next start is a cold boot
      return
    }
    setState(m, 'stopping', cause, event(now(), 'stop', 'stopping', 'user'))
    later(m, draw(timings.stopMs), stopped)
  }

  /**
   * A new lease on `m`, recorded in the lease log.
   * @param {any} m @param {{owner: string, description: string, ttlMs: number, source: 'api' | 'fault'}} o
   */
  function grantLease(m, {owner, description, ttlMs, source}) {
    const expiresAtMs = now() + ttlMs
    const record = {app: m.app, machine: m.id, owner, description, source, acquiredAt: now(), expiresAt: expiresAtMs, refreshes: 0, refreshedAt: null, releasedAt: null}
    leaseLog.push(record)
    return {nonce: hex(12), owner, description, expiresAtMs, record}
  }
  /** @param {any} m */
  function activeLease(m) {
    if (m.lease && m.lease.expiresAtMs <= now()) m.lease = null
    return m.lease
  }
  /** The 409 message when `nonce` does not hold the Machine's lease, else null. @param {any} m @param {string | undefined} nonce */
  function leaseConflict(m, nonce) {
    const lease = activeLease(m)
    if (!lease || lease.nonce === nonce) return null
    return `machine ID ${m.id} lease currently held by ${lease.owner}, expires at ${rfc3339(lease.expiresAtMs)}`
  }
  /** @param {any} m */
  function leaseEnvelope(m) {
    const l = m.lease
    return {status: 'success', data: {nonce: l.nonce, expires_at: Math.floor(l.expiresAtMs / 1000), owner: l.owner, description: l.description, version: m.instanceId}}
  }

  /** The Machine as the API shows it. @param {any} m @param {{summary?: boolean}} [opts] */
  function machineJson(m, {summary = false} = {}) {
    const base = {
      id: m.id,
      name: m.name,
      state: m.state,
      region: m.region,
      instance_id: m.instanceId,
      private_ip: m.privateIp,
      created_at: rfc3339(m.createdAt),
      updated_at: rfc3339(m.updatedAt),
    }
    if (summary) return base
    const config = machineConfig(m)
    const checks = checksStatus(m)
    return {
      ...base,
      ...(m.hostStatus === 'ok' ? {config} : {incomplete_config: config}),
      image_ref: {registry: 'registry.fly.io', repository: m.app, tag: 'deployment-local', digest: `sha256:${createHash('sha256').update(m.app).digest('hex')}`, labels: {}},
      events: m.events.slice(-50).reverse(),
      checks: m.hasChecks
        ? [{name: CHECK_NAME, status: checks, output: checks === 'passing' ? 'Success' : 'connect: connection refused', updated_at: rfc3339(m.checksUpdatedAt)}]
        : [],
      host_status: m.hostStatus,
    }
  }

  /** @param {any} m */
  function machineConfig(m) {
    const service = {
      protocol: 'tcp',
      internal_port: 8080,
      autostart: true,
      autostop: 'off',
      min_machines_running: 0,
      ports: [
        {port: 80, handlers: ['http'], force_https: true},
        {port: 443, handlers: ['tls', 'http']},
      ],
      ...(m.hasChecks ? {checks: [{type: 'http', interval: '15s', timeout: '10s', grace_period: '5s', method: 'GET', path: '/healthz', protocol: 'http'}]} : {}),
    }
    return {
      init: {},
      guest: {cpu_kind: 'shared', cpus: 1, memory_mb: 256},
      image: `registry.fly.io/${m.app}:deployment-local`,
      metadata: {...m.metadata},
      restart: {policy: 'on-failure', max_retries: 10},
      services: [service],
    }
  }

  /** A snapshot for tests. @param {any} m */
  function view(m) {
    const lease = activeLease(m)
    return {
      app: m.app,
      id: m.id,
      name: m.name,
      region: m.region,
      state: m.state,
      checks: checksStatus(m),
      hostStatus: m.hostStatus,
      instanceId: m.instanceId,
      privateIp: m.privateIp,
      lease: lease ? {nonce: lease.nonce, owner: lease.owner, description: lease.description, expiresAtMs: lease.expiresAtMs} : null,
      metadata: {...m.metadata},
      counts: {...m.counts},
    }
  }

  // ---------- the operations ----------

  /**
   * @typedef {{status: number, body?: unknown, headers?: Record<string, string>} | 'hang'} Answer
   * @typedef {{op: string, action: string, app: string, machine: any, query: any, headers: Record<string, any>, body: any, owner: string, params: any, res: import('node:http').ServerResponse}} OpContext
   */
  const err = (/** @type {number} */ status, /** @type {string} */ error) => ({status, body: {error}})

  /** @type {Record<string, (c: OpContext) => Answer | Promise<Answer>>} */
  const operations = {
    list(c) {
      const {include_deleted, region, state, summary} = c.query
      const states = typeof state === 'string' && state !== '' ? new Set(state.split(',').map((s) => s.trim())) : null
      const list = [...(apps.get(c.app)?.values() ?? [])].filter(
        (m) => (include_deleted || m.state !== 'destroyed') && (!region || m.region === region) && (!states || states.has(m.state)),
      )
      return {status: 200, body: list.map((m) => machineJson(m, {summary: summary === true}))}
    },
    get: (c) => ({status: 200, body: machineJson(c.machine)}),
    restart(c) {
      const m = c.machine
      const conflict = leaseConflict(m, c.headers['fly-machine-lease-nonce'])
      if (conflict) return err(409, conflict)
      if (m.state !== 'started') return err(412, 'failed_precondition: unable to restart machine, not currently started or stopped')
      doRestart(m)
      return {status: 200, body: {ok: true}}
    },
    start(c) {
      const m = c.machine
      const conflict = leaseConflict(m, c.headers['fly-machine-lease-nonce'])
      if (conflict) return err(409, conflict)
      if (m.state === 'started' || m.state === 'starting') return err(412, 'failed_precondition: machine still active, refusing to start')
      if (!['stopped', 'suspended', 'failed'].includes(m.state)) return err(412, `failed_precondition: unable to start machine from current state: '${m.state}'`)
      const previous = m.state
      doStart(m)
      return {status: 200, body: {previous_state: previous, migrated: false, new_host: ''}}
    },
    stop(c) {
      const m = c.machine
      const conflict = leaseConflict(m, c.headers['fly-machine-lease-nonce'])
      if (conflict) return err(409, conflict)
      if (['started', 'starting', 'suspended'].includes(m.state)) doStop(m)
      else if (!['stopped', 'stopping'].includes(m.state)) return err(412, `failed_precondition: unable to stop machine from current state: '${m.state}'`)
      return {status: 200, body: {ok: true}}
    },
    wait(c) {
      const m = c.machine
      const raw = c.query.state ?? 'started'
      const want = (Array.isArray(raw) ? raw : String(raw).split(',')).map((s) => s.trim())
      const timeoutS = Math.min(Math.max(Number(c.query.timeout ?? timings.maxWaitS), 1), timings.maxWaitS)
      const reached = () => want.includes(m.state) || (want.includes('settled') && !TRANSIENT_STATES.has(m.state))
      const ok = () => ({status: 200, body: {ok: true, state: m.state, version: m.instanceId, event_id: m.events.at(-1)?.id ?? ''}})
      if (reached()) return ok()
      return new Promise((resolve) => {
        const done = (/** @type {Answer} */ answer) => {
          m.watchers.delete(watch)
          clock.clearTimeout(timer)
          c.res.off('close', gone)
          resolve(answer)
        }
        const watch = () => reached() && done(ok())
        const timer = clock.setTimeout(
          () => done(err(408, `deadline_exceeded: machine failed to reach desired state, ${want.join(',')}, currently ${m.state}`)),
          timeoutS * 1000,
        )
        const gone = () => done('hang') // the client went away: nothing to answer
        m.watchers.add(watch)
        c.res.on('close', gone)
      })
    },
    lease(c) {
      const m = c.machine
      const nonce = c.headers['fly-machine-lease-nonce'] || undefined
      const ttl = c.body?.ttl ?? c.query.ttl ?? timings.defaultLeaseTtlS
      if (!(ttl > 0)) return err(400, 'invalid_argument: ttl must be a positive number of seconds')
      const current = activeLease(m)
      if (current && current.nonce !== nonce) return err(409, leaseConflict(m, nonce) ?? 'lease conflict')
      if (current) {
        current.expiresAtMs = now() + ttl * 1000 // refresh: same nonce
        if (typeof c.body?.description === 'string') current.description = c.body.description
        const record = current.record
        record.expiresAt = current.expiresAtMs
        record.description = current.description
        record.refreshes++
        record.refreshedAt = now()
      } else {
        m.lease = grantLease(m, {owner: c.owner, description: c.body?.description ?? '', ttlMs: ttl * 1000, source: 'api'})
      }
      return {status: 201, body: leaseEnvelope(m)}
    },
    lease_get(c) {
      if (!activeLease(c.machine)) return err(404, 'lease not found')
      return {status: 200, body: leaseEnvelope(c.machine)}
    },
    release(c) {
      const m = c.machine
      const lease = activeLease(m)
      if (!lease) return err(404, 'lease not found')
      const conflict = leaseConflict(m, c.headers['fly-machine-lease-nonce'])
      if (conflict) return err(409, conflict)
      lease.record.releasedAt = now()
      m.lease = null
      return {status: 200, body: {status: 'success', data: {ok: true}}}
    },
    metadata_get: (c) => ({status: 200, body: {...c.machine.metadata}}),
    metadata_key_get(c) {
      const value = c.machine.metadata[c.params.key]
      return value === undefined ? err(404, 'metadata key not found') : {status: 200, body: {value}}
    },
    metadata_set(c) {
      c.machine.metadata[c.params.key] = c.body.value ?? ''
      c.machine.updatedAt = now()
      return {status: 204}
    },
    metadata_delete(c) {
      delete c.machine.metadata[c.params.key]
      c.machine.updatedAt = now()
      return {status: 204}
    },
  }

  /** Take a token from the (scope, action) bucket: 0 if allowed, else ms until the next token. @param {string} scope @param {string} action */
  function takeToken(scope, action) {
    if (!limits) return 0
    const {rate, burst} = limits.actions[action] ?? limits.default
    const key = `${scope}\u0000${action}`
    const t = now()
    const b = buckets.get(key) ?? {tokens: burst, last: t}
    b.tokens = Math.min(burst, b.tokens + ((t - b.last) * rate) / 1000)
    b.last = t
    buckets.set(key, b)
    if (b.tokens >= 1) {
      b.tokens -= 1
      return 0
    }
    return Math.ceil(((1 - b.tokens) * 1000) / rate)
  }

  /** @param {string} action @param {string} app @param {string | null} machine */
  function matchRule(action, app, machine) {
    for (let i = 0; i < rules.length; i++) {
      const r = rules[i]
      const actions = Array.isArray(r.action) ? r.action : [r.action]
      if (!(actions.includes('*') || actions.includes(action))) continue
      if (r.machine && r.machine !== machine) continue
      if (r.app && r.app !== app) continue
      const times = r.times ?? 1
      r.hits = (r.hits ?? 0) + 1
      if (r.hits >= times) rules.splice(i, 1)
      return r
    }
    return null
  }

  /**
   * Route one request (called by openapi-backend with its context).
   * @param {any} c  openapi-backend context
   * @param {{entry: LogEntry, res: import('node:http').ServerResponse}} rq
   * @returns {Promise<Answer>}
   */
  async function route(c, rq) {
    const {entry} = rq
    const opId = c.operation?.operationId
    if (!opId) return err(404, `not found: ${c.request.method.toUpperCase()} ${c.request.path}`)
    const headers = c.request.headers ?? {}
    const token = bareToken(headers.authorization, {requireScheme: true})
    const scope = tokens.get(token)
    const appName = c.request.params?.app_name ?? null
    entry.app = appName
    entry.action = ACTIONS[/** @type {keyof typeof ACTIONS} */ (opId)] ?? opId
    if (!token || !scope || (appName && scope !== '*' && !scope.includes(appName))) return err(401, 'Authenticate: token validation error')
    if (c.validation && !c.validation.valid) return err(400, `invalid request (${opId}): ${describeValidationErrors(c.validation.errors)}`)
    const action = ACTIONS[/** @type {keyof typeof ACTIONS} */ (opId)]
    if (!action) return err(501, `not implemented by the local Fly emulator: ${opId}`)
    const machines = apps.get(appName)
    if (!machines) return err(404, 'app not found')
    const machineId = c.request.params?.machine_id ?? null
    entry.machine = machineId
    const m = machineId ? machines.get(machineId) : null
    if (machineId && !m) return err(404, 'machine not found')
    if (machineId) {
      const counts = (stats.byMachine[machineId] ??= {})
      counts[action] = (counts[action] ?? 0) + 1
    }

    /** @type {OpContext} */
    const ctx = {
      op: opId,
      action,
      app: appName,
      machine: m,
      query: c.request.query ?? {},
      headers,
      body: c.request.requestBody,
      owner: ownerOf(token),
      params: c.request.params,
      res: rq.res,
    }
    const rule = matchRule(action, appName, machineId)
    if (rule) {
      entry.fault = rule.label ?? `fault:${rule.status ?? 503}`
      stats.faults[action] = (stats.faults[action] ?? 0) + 1
      if (rule.perform && (!m || m.hostStatus === 'ok')) await operations[action](ctx)
      if (rule.hang) return 'hang'
      if (rule.delayMs) await new Promise((r) => setTimeout(r, rule.delayMs))
      const status = rule.status ?? 503
      const h = {...rule.headers, ...(rule.retryAfter != null ? {'retry-after': String(rule.retryAfter)} : {})}
      return {status, body: rule.body !== undefined ? rule.body : {error: rule.error ?? DEFAULT_ERRORS[status] ?? `error ${status}`}, headers: h}
    }
    const waitMs = takeToken(m ? m.id : appName, action)
    if (waitMs > 0) {
      entry.fault = 'rate_limit'
      stats.rateLimited[action] = (stats.rateLimited[action] ?? 0) + 1
      stats.rateLimitedTotal++
      return {status: 429, body: {error: 'rate limit exceeded'}, headers: limits?.retryAfter ? {'retry-after': String(Math.max(1, Math.ceil(waitMs / 1000)))} : {}}
    }
    if (m && m.hostStatus !== 'ok' && !['get', 'list', 'metadata_get', 'metadata_key_get'].includes(action)) {
      return err(503, `unavailable: the host of machine ${m.id} is ${m.hostStatus}`)
    }
    return operations[action](ctx)
  }

  // ---------- HTTP ----------

  const server = createServer(async (req, res) => {
    const at = now()
    const requestId = `${ulid(at)}-lcl`
    const url = new URL(req.url ?? '/', 'http://localhost')
    /** @type {LogEntry} */
    const entry = {at, id: requestId, method: req.method ?? 'GET', path: url.pathname, query: url.search.slice(1), app: null, machine: null, action: null, status: null, ms: null, endedAt: null, error: null, fault: null}
    log.push(entry)
    // A request that never gets an answer (a hang, or a client that gave up) ends when its connection closes.
    res.once('close', () => {
      if (entry.endedAt === null) entry.endedAt = now()
    })
    stats.requests++
    /** @type {Answer} */
    let answer
    try {
      const raw = await readBody(req)
      if (raw === null) answer = err(413, 'request body too large')
      else {
        let body = raw.length ? raw.toString('utf8') : undefined
        if (body !== undefined && /json/i.test(String(req.headers['content-type'] ?? ''))) {
          try {
            body = JSON.parse(body)
          } catch {
            // left as a string: the validator reports "requestBody must be object"
          }
        }
        answer = url.pathname === '/v1' || url.pathname.startsWith('/v1/')
          ? await backend.handleRequest({method: entry.method, path: req.url ?? '/', headers: /** @type {any} */ (req.headers), body}, {route: (/** @type {any} */ c) => route(c, {entry, res})})
          : err(404, `not found: ${entry.method} ${url.pathname}`)
      }
    } catch (e) {
      answer = err(500, `internal: emulator error: ${e instanceof Error ? e.message : String(e)}`)
    }
    const latencyMs = answer === 'hang' ? 0 : draw(timings.apiLatencyMs)
    if (latencyMs > 0) await new Promise((r) => setTimeout(r, latencyMs))
    stats.calls[entry.action ?? 'none'] = (stats.calls[entry.action ?? 'none'] ?? 0) + 1
    if (answer === 'hang') {
      if (!res.destroyed && !res.writableEnded) hanging.add(res)
      res.on('close', () => hanging.delete(res))
      return
    }
    entry.status = answer.status
    entry.ms = now() - at
    entry.endedAt = now()
    const body = /** @type {any} */ (answer.body)
    if (answer.status >= 400 && body && typeof body.error === 'string') entry.error = body.error
    stats.statuses[answer.status] = (stats.statuses[answer.status] ?? 0) + 1
    events.emit('request', entry)
    if (res.destroyed) return
    const headers = {'fly-request-id': requestId, server: 'Fly/local-emulator', via: '1.1 fly.io', ...answer.headers}
    if (answer.status === 204 || body === undefined) {
      res.writeHead(answer.status, headers).end()
    } else {
      res.writeHead(answer.status, {'content-type': 'application/json; charset=utf-8', ...headers}).end(JSON.stringify(body))
    }
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port ?? 0, '127.0.0.1', () => resolve(undefined))
  })
  const {port} = /** @type {import('node:net').AddressInfo} */ (server.address())

  // ---------- setup ----------

  const appSpecs = Array.isArray(options.apps) ? Object.fromEntries(options.apps.map((a) => [a, {}])) : (options.apps ?? {web: {machines: 3}})
  for (const [name, spec] of Object.entries(appSpecs)) addApp(name, spec)
  for (const rule of options.faults ?? []) rules.push({...rule})

  /** @param {string} id */
  const must = (id) => {
    const m = byId.get(id)
    if (!m) throw new Error(`no machine ${id}`)
    return m
  }

  /**
   * Resolve when `predicate(view)` holds for Machine `id` (checked now and on each of its changes).
   * @param {string} id @param {(v: ReturnType<typeof view>) => boolean} predicate @param {{timeoutMs?: number}} [opts]
   */
  function until(id, predicate, {timeoutMs = 10_000} = {}) {
    const m = must(id)
    return new Promise((resolve, reject) => {
      if (predicate(view(m))) return resolve(view(m))
      const watch = () => {
        if (!predicate(view(m))) return
        m.watchers.delete(watch)
        clock.clearTimeout(timer)
        resolve(view(m))
      }
      const timer = clock.setTimeout(() => {
        m.watchers.delete(watch)
        reject(new Error(`machine ${id}: condition not met within ${timeoutMs} ms (state ${m.state}, checks ${checksStatus(m)})`))
      }, timeoutMs)
      m.watchers.add(watch)
    })
  }

  const faults = {
    /** Add a scripted answer; returns the rule (its `hits` counts uses). @param {FaultRule} rule */
    inject(rule) {
      const r = {...rule}
      rules.push(r)
      return r
    },
    /** 429s on `action` (with `Retry-After: retryAfter` when given). @param {string} action @param {{machine?: string, retryAfter?: number, times?: number}} [o] */
    rateLimit: (action, o = {}) => faults.inject({action, status: 429, label: 'fault:429', ...o}),
    /** 5xx on `action`. @param {string} action @param {{machine?: string, status?: number, times?: number, error?: string}} [o] */
    serverError: (action, o = {}) => faults.inject({action, status: 503, label: `fault:${o.status ?? 503}`, ...o}),
    /** The next restart(s) of `machine` happen, but the answer is a 408. @param {string} machine @param {{times?: number, status?: number}} [o] */
    ambiguousRestart: (machine, o = {}) => faults.inject({action: 'restart', machine, status: 408, perform: true, label: 'fault:ambiguous', ...o}),
    /** The next `times` starts/restarts of `id` never complete (stuck in `starting`; `failed` after failAfterMs if given). @param {string} id @param {{failAfterMs?: number, times?: number}} [o] */
    stuck(id, o = {}) {
      must(id).stuck = {failAfterMs: o.failAfterMs ?? null, times: o.times ?? 1}
    },
    /** host_status `unreachable` (config moves to incomplete_config; mutations answer 503), or back to ok. @param {string} id @param {boolean} [on] */
    unreachable(id, on = true) {
      const m = must(id)
      m.hostStatus = on ? 'unreachable' : 'ok'
      record(m, 'fault')
    },
    /** Someone else holds the lease. @param {string} id @param {{owner?: string, ttlS?: number, description?: string}} [o] */
    leaseHeldElsewhere(id, o = {}) {
      const m = must(id)
      m.lease = grantLease(m, {owner: o.owner ?? OTHER_OWNER, description: o.description ?? 'fly deploy', ttlMs: (o.ttlS ?? 60) * 1000, source: 'fault'})
      const {record: _, ...lease} = m.lease
      return lease
    },
    /** Health checks stay critical (or recover). @param {string} id @param {boolean} [on] */
    checksCritical(id, on = true) {
      const m = must(id)
      m.checksStuck = on
      record(m, 'fault')
    },
    /** Drop every rule and Machine fault. */
    clear() {
      rules.length = 0
      for (const m of byId.values()) {
        m.stuck = null
        m.checksStuck = false
        if (m.hostStatus !== 'ok') {
          m.hostStatus = 'ok'
          record(m, 'fault')
        }
      }
    },
    /** The rules still active. */
    rules: () => rules.map((r) => ({...r})),
  }

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    clock,
    /** `Authorization` value for the default token. */
    authorization: `Bearer ${DEFAULT_TOKEN}`,
    events,
    /** Every request, in arrival order (status null while in flight). */
    log,
    /** Every state / checks / host change of every Machine, in order. */
    stateLog,
    /**
     * Every lease granted (of one app), oldest first, each with how it ended as of now: `released` by a DELETE,
     * `expired` by its TTL on the emulator clock, or still `held`. Copies: reading changes nothing.
     * @param {string} [app] @returns {LeaseRecord[]}
     */
    leases(app) {
      return leaseLog
        .filter((r) => !app || r.app === app)
        .map((r) => ({...r, end: r.releasedAt !== null ? 'released' : r.expiresAt <= now() ? 'expired' : 'held'}))
    },
    stats,
    faults,
    timings,
    rateLimits: limits,
    addApp,
    apps: () => [...apps.keys()],
    /** Snapshots of an app's Machines (all apps when omitted). @param {string} [app] */
    machines: (app) => [...byId.values()].filter((m) => !app || m.app === app).map(view),
    /** The Machine as the API would show it. @param {string} id */
    machineJson: (id) => machineJson(must(id)),
    /** @param {string} id */
    state: (id) => must(id).state,
    /** @param {string} id */
    machine: (id) => view(must(id)),
    /** The timeline of one Machine. @param {string} id */
    timeline: (id) => stateLog.filter((e) => e.machine === id),
    /** Timelines of every Machine (of one app), keyed by id. @param {string} [app] */
    timelines(app) {
      /** @type {Record<string, TimelineEntry[]>} */
      const out = {}
      for (const m of byId.values()) if (!app || m.app === app) out[m.id] = []
      for (const e of stateLog) if (out[e.machine]) out[e.machine].push(e)
      return out
    },
    until,
    /** Resolve when Machine `id` is in one of `states` (a state or a list; 'settled' allowed). @param {string} id @param {string | string[]} states @param {{timeoutMs?: number}} [opts] */
    waitFor(id, states, opts) {
      const want = Array.isArray(states) ? states : [states]
      return until(id, (v) => want.includes(v.state) || (want.includes('settled') && !TRANSIENT_STATES.has(v.state)), opts)
    },
    /** Direct control, bypassing leases, rate limits and faults (scenario setup). */
    control: {
      /** @param {string} id */ restart: (id) => doRestart(must(id), 'control'),
      /** @param {string} id */ start: (id) => doStart(must(id), 'control'),
      /** @param {string} id */ stop: (id) => doStop(must(id), 'control'),
      /** Jump to a state with no transition delay. @param {string} id @param {string} state */
      setState(id, state) {
        const m = must(id)
        cancel(m)
        setState(m, state, 'control', event(now(), 'update', state, 'user'))
      },
    },
    /**
     * Checks of `app`'s Machines also require `probe(id)` (the fleet passes "the app is serving"). Call
     * `refreshChecks` when its answer changes.
     * @param {string} app @param {((id: string) => boolean) | null} probe
     */
    setHealthProbe(app, probe) {
      if (probe) healthProbes.set(app, probe)
      else healthProbes.delete(app)
      for (const m of byId.values()) if (m.app === app) record(m, 'checks')
    },
    /** @param {string} id @param {string} [cause] */
    refreshChecks: (id, cause = 'checks') => record(must(id), cause),
    async close() {
      if (closed) return
      closed = true
      for (const m of byId.values()) {
        clock.clearTimeout(m.timer)
        clock.clearTimeout(m.checksTimer)
        for (const w of m.watchers) m.watchers.delete(w)
      }
      for (const res of hanging) res.destroy()
      server.closeAllConnections()
      await new Promise((resolve) => server.close(() => resolve(undefined)))
    },
  }
}

/**
 * Strip `Bearer` / `FlyV1` schemes (repeatedly, any case), as fly-go does. With `requireScheme` (an
 * `Authorization` header), a value without any scheme yields ''.
 * @param {unknown} header @param {{requireScheme?: boolean}} [o]
 */
export function bareToken(header, {requireScheme = false} = {}) {
  let v = String(header ?? '').trim()
  let schemes = 0
  for (let m; (m = /^(bearer|flyv1)\s+/i.exec(v)); schemes++) v = v.slice(m[0].length).trim()
  return requireScheme && schemes === 0 ? '' : v
}

/** A stable `…@tokens.fly.io` owner for a token. @param {string} token */
function ownerOf(token) {
  const h = createHash('sha256').update(token).digest('hex')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}@tokens.fly.io`
}

/** RFC 3339, whole seconds. @param {number} ms */
export function rfc3339(ms) {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
}

/** @param {undefined | false | {default?: {rate: number, burst: number}, actions?: Record<string, {rate: number, burst: number}>, retryAfter?: boolean, enabled?: boolean}} opt */
function rateLimitConfig(opt) {
  if (opt === false || opt?.enabled === false) return null
  return {
    default: opt?.default ?? DEFAULT_RATE_LIMITS.default,
    actions: {...DEFAULT_RATE_LIMITS.actions, ...opt?.actions},
    retryAfter: opt?.retryAfter ?? DEFAULT_RATE_LIMITS.retryAfter,
  }
}

/** The body, or null past 1 MiB. @param {import('node:http').IncomingMessage} req */
async function readBody(req) {
  const chunks = []
  let size = 0
  for await (const chunk of req) {
    size += chunk.length
    if (size > 1 << 20) return null
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

