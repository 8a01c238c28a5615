// The bench's world: a local Fly (Machines API emulator with Fly's rate limits + a fleet behind a Fly-like proxy,
// every Machine running the demo app of local/app.mjs with the reference receiver), a document store standing in
// for Sanity, and events made from the repo blueprint (local/sanity-events.mjs). One world per measurement, started
// with the same size and seed, so every strategy starts from the same state: the same Machines (ids, regions),
// the same documents, full rate-limit buckets.
//
// Both APIs answer with a realistic latency (`apiLatencyMs`, default 30–50 ms drawn per request): the Machines API,
// and Sanity's (the local Content Lake: the engine's dependents query, the article's refetch, each Machine's reads).
// The handlers get the Function's `context.clientOptions` for that project, as Sanity passes them.
//
// Freshness is read from what the Machines did, not sampled: every push a Machine applied (onApplied), every boot
// (the documents it loaded) and the fleet's availability events. A Machine is fresh from the moment it serves the
// new revision and keeps serving it: the push that brought it, or — when it was restarted after the change — the
// moment its new process came up with the content it loaded at boot.
import {startFleet, DEFAULT_TOKEN} from '../local/fly/index.mjs'
import {createClient} from '@sanity/client'
import {DocumentStore} from '../local/content-lake/store.mjs'
import {startContentLake} from '../local/content-lake/server.mjs'
import {eventsFor} from '../local/sanity-events.mjs'
import {createApp, SYNC_PATH} from '../local/app.mjs'
import {handler as engineHandler} from '../function.ts'
import {forgetRuns} from '../wasm.ts'
import {handler as baselineHandler, signedSyncRequest} from './baseline.mjs'

export const SYNC_SECRET = 'bench-sync-secret-0123456789abcdef'
const SANITY_TOKEN = 'bench-sanity-token'
/**
 * The demo app reconciles with Sanity at boot and then every interval. The interval is set past any measurement so
 * that freshness comes from the strategy under test (a push, or a restart and the boot's catch-up), not from the
 * app reconciling on its own.
 */
export const CATCH_UP_SECONDS = 3_600
const TYPES = ['page', 'article', 'siteSettings']
/**
 * The strategies: our Function's handler in a process that has run before (it remembers the configuration and the
 * Machines between runs, as a Function's process does while it lives); the same handler as every run of a new
 * process (`forgetRuns` first); and the article's handler (bench/baseline.mjs).
 */
export const STRATEGIES = {
  engine: engineHandler,
  'engine-new': (args) => {
    forgetRuns()
    return engineHandler(args)
  },
  // Dependents not looked up (`FLY_SYNC_DEPENDENTS_DEPTH=0`): the pushes wait for no Sanity query. The handler
  // reads its environment when it is called, before its first await.
  'engine-nodeps': (args) => {
    const saved = process.env.FLY_SYNC_DEPENDENTS_DEPTH
    process.env.FLY_SYNC_DEPENDENTS_DEPTH = '0'
    try {
      return engineHandler(args)
    } finally {
      if (saved === undefined) delete process.env.FLY_SYNC_DEPENDENTS_DEPTH
      else process.env.FLY_SYNC_DEPENDENTS_DEPTH = saved
    }
  },
  baseline: baselineHandler,
}
/** The Machines API's and Sanity's answer latency (ms, drawn per request). */
export const API_LATENCY_MS = [30, 50]
export const PROBE_PATH = '/about'
export const PROBE_INTERVAL_MS = 100
/** function.ts answers a Machine list from one read less than LIST_REUSE_MS (1 s) ago: keep single publishes apart. */
export const GAP_MS = 1_050
/** How long a measurement cut at its limit waits for the invocations still in flight. */
const DRAIN_LIMIT_MS = 30_000
const EDITORIAL_START = Date.parse('2026-11-27T09:00:00Z')
const SEED_DOCS = [
  {_id: 'siteSettings', _type: 'siteSettings', title: 'Acme (v1)'},
  {_id: 'page-about', _type: 'page', title: 'About us', slug: {_type: 'slug', current: 'about'}},
  {_id: 'page-news', _type: 'page', title: 'News', slug: {_type: 'slug', current: 'news'}},
  {_id: 'page-floor', _type: 'page', title: 'Floor', slug: {_type: 'slug', current: 'floor'}},
]

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)))
let lastInvocationEnd = 0

/** Wait until `gapMs` have passed since the last invocation of any world ended. */
async function quiet(gapMs = GAP_MS) {
  await sleep(lastInvocationEnd + gapMs - Date.now())
}


/**
 * Run `fn` over `items` with at most `concurrency` in flight; resolves to the results in order (undefined for items
 * never started because `stopped()` said so).
 */
async function pool(items, concurrency, fn, stopped = () => false) {
  const out = new Array(items.length)
  let next = 0
  const lane = async () => {
    while (next < items.length && !stopped()) {
      const i = next++
      out[i] = await fn(items[i])
    }
  }
  await Promise.all(Array.from({length: Math.min(concurrency, items.length)}, lane))
  return out
}

export const quantile = (xs, q) => {
  if (!xs.length) return null
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))]
}

/**
 * @param {{machines: number, seed?: number, regions?: string[], latencyMs?: Record<string, number>, maxUnavailable?: number | string, apiLatencyMs?: number | [number, number]}} o
 */
export async function startWorld({machines, seed = 1, regions = ['ord', 'fra', 'nrt'], latencyMs, maxUnavailable = 2, apiLatencyMs = API_LATENCY_MS}) {
  let editorialNow = EDITORIAL_START
  // Each transaction one editorial second after the previous: `_updatedAt` (to the second) orders revisions.
  const store = new DocumentStore({now: () => (editorialNow += 1000)})
  store.transaction(SEED_DOCS.map((doc) => ({createOrReplace: doc})))
  // Sanity's API over that store: what each Machine's app reads at boot (@sanity/client, as in local/simulation.mjs).
  const lake = await startContentLake({store, token: SANITY_TOKEN, latencyMs: apiLatencyMs, seed})
  // What Sanity passes a Function for its project (`context.clientOptions`).
  const clientOptions = {...lake.clientConfig(), token: SANITY_TOKEN}

  /** machine id → app of its current boot */
  const apps = new Map()
  /** machine id → doc id → [{rev, at}] applied by push */
  const pushed = new Map()
  /** machine id → [{at, revs: Map<doc id, rev>}] */
  const boots = new Map()
  const fleet = await startFleet({
    app: 'web',
    machines,
    regions,
    ...(latencyMs ? {latencyMs} : {}),
    apiOptions: {seed, timings: {apiLatencyMs}},
    handlerFor: (machine) => {
      apps.get(machine.id)?.close?.() // the previous process's timers
      const app = createApp(machine, {
        secret: SYNC_SECRET,
        client: createClient({...lake.clientConfig(), token: SANITY_TOKEN}),
        types: TYPES,
        intervalSeconds: CATCH_UP_SECONDS,
        source: {snapshot: async () => store.published()}, // the demo app before catch-up loaded from this
        onApplied: (m, change, via = 'push') => {
          if (via !== 'push') return // the boot's catch-up: recorded by onBoot below
          const docs = pushed.get(m.id) ?? pushed.set(m.id, new Map()).get(m.id)
          const list = docs.get(change.id) ?? docs.set(change.id, []).get(change.id)
          list.push({rev: change.rev, at: Date.now()})
        },
      })
      apps.set(machine.id, app)
      return (request) => app.handle(request)
    },
    onBoot: async (machine) => {
      const app = apps.get(machine.id)
      await app.boot()
      const list = boots.get(machine.id) ?? boots.set(machine.id, []).get(machine.id)
      list.push({at: Date.now(), revs: new Map([...app.docs.values()].map((d) => [d._id, d._rev]))})
    },
  })
  const api = fleet.api
  const ids = api.machines('web').map((m) => m.id)
  const regionOf = Object.fromEntries(api.machines('web').map((m) => [m.id, m.region]))
  const env = {
    FLY_APP_NAME: 'web',
    FLY_API_URL: api.url,
    FLY_APP_URL: fleet.url,
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SYNC_SECRET,
    FLY_SYNC_ROUTES: 'article=/blog/{slug},page=/{slug},siteSettings=/settings',
    FLY_RESTART_TYPES: 'siteSettings',
    FLY_MAX_UNAVAILABLE: String(maxUnavailable),
    FLY_RESTART_TIMEOUT_MS: '15000',
    FLY_SYNC_BUDGET_MS: '100000',
    // The context's `apiHost` is Sanity's global host in production; here the query goes to the local Content Lake.
    SANITY_API_HOST: lake.url,
  }
  const savedEnv = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]))
  Object.assign(process.env, env)

  /** When Machine `id` started serving every expectation and kept serving it, or null. */
  function freshAt(id, expectations) {
    if (!fleet.machine(id).up) return null
    const events = fleet.availability(id).events
    const upSince = events.findLast((e) => e.up)?.at
    if (upSince === undefined) return null
    const boot = (boots.get(id) ?? []).findLast((b) => b.at <= upSince)
    let at = upSince
    for (const e of expectations) {
      if (boot?.revs.get(e.id) === e.rev) continue
      if (e.bootOnly) return null
      const record = pushed.get(id)?.get(e.id)?.find((r) => r.rev === e.rev && r.at >= (boot?.at ?? 0))
      if (!record) return null
      at = Math.max(at, record.at)
    }
    return at
  }

  const healthyNow = (id) => {
    const m = api.machine(id)
    return m.state === 'started' && m.checks === 'passing' && fleet.machine(id).up
  }

  /** Since when each Machine has been started with passing checks (null: not now). */
  function healthySince() {
    const out = {}
    for (const [id, entries] of Object.entries(api.timelines('web'))) {
      let since = null
      for (const e of entries) {
        const ok = e.state === 'started' && e.checks === 'passing'
        if (ok && since === null) since = e.at
        if (!ok) since = null
      }
      // The emulator logs a check turning to passing when it is read or timed; one that passed only once its app
      // came up (its health probe) and that nobody read since is healthy from when it started serving.
      if (since === null && healthyNow(id)) {
        const upAt = fleet.availability(id).events.findLast((e) => e.up)?.at ?? 0
        since = Math.max(entries.at(-1)?.at ?? 0, upAt)
      }
      out[id] = since
    }
    return out
  }

  /** Most Machines at once in [from, to]: not serving (fleet availability), and not started+passing (timelines). */
  function mostDown(from, to) {
    const sweep = (initialDown, changes) => {
      let down = initialDown.size
      let most = down
      const isDown = new Set(initialDown)
      for (const c of changes.sort((a, b) => a.at - b.at)) {
        if (c.down && !isDown.has(c.id)) isDown.add(c.id)
        else if (!c.down && isDown.has(c.id)) isDown.delete(c.id)
        else continue
        most = Math.max(most, isDown.size)
      }
      return Math.max(most, down)
    }
    const avail = fleet.availability()
    const servingDownAtStart = new Set()
    const servingChanges = []
    for (const [id, a] of Object.entries(avail)) {
      const before = a.events.filter((e) => e.at < from).at(-1)
      if (before && !before.up) servingDownAtStart.add(id)
      for (const e of a.events) if (e.at >= from && e.at <= to) servingChanges.push({id, at: e.at, down: !e.up})
    }
    const healthDownAtStart = new Set()
    const healthChanges = []
    for (const [id, entries] of Object.entries(api.timelines('web'))) {
      const before = entries.filter((e) => e.at < from).at(-1)
      const bad = (e) => !(e.state === 'started' && e.checks === 'passing')
      if (before && bad(before)) healthDownAtStart.add(id)
      for (const e of entries) if (e.at >= from && e.at <= to) healthChanges.push({id, at: e.at, down: bad(e)})
    }
    return {notServing: sweep(servingDownAtStart, servingChanges), notHealthy: sweep(healthDownAtStart, healthChanges)}
  }

  function counters() {
    const machines = api.machines('web')
    return {
      at: Date.now(),
      requests: api.stats.requests,
      rateLimited: api.stats.rateLimitedTotal,
      restartCalls: api.stats.calls.restart ?? 0,
      restarts: machines.reduce((n, m) => n + m.counts.restarts, 0),
      proxied: fleet.stats.proxied,
      logLength: api.log.length,
    }
  }

  /** The events Sanity would send for these document changes (the blueprint's filter and projection). */
  async function eventData(changes) {
    const out = []
    for (const change of changes) for (const e of await eventsFor(change)) out.push(e.data)
    return out
  }

  const expectationsFor = (changes) =>
    changes.filter((c) => c.after).map((c) => ({id: c.id, rev: c.after._rev, bootOnly: c.after._type === 'siteSettings'}))

  /**
   * Deliver `datas` to `strategy` (at most `concurrency` invocations in flight), then wait until every invocation
   * returned, no Machines API request is in flight and every Machine serves the expectations with passing checks —
   * or `limitMs` after the first delivery. Probes every Machine every 100 ms meanwhile when `probe`.
   */
  async function run({strategy, datas, expectations, limitMs, concurrency = 20, probe = false}) {
    const handler = STRATEGIES[strategy]
    if (!handler) throw new Error(`unknown strategy ${strategy}`)
    const before = counters()
    const servingAtStart = new Set(fleet.machines().filter((m) => m.up).map((m) => m.id))
    // A failed read is `refused` (the Machine is not serving: its connection is dropped), `timeout` (no answer
    // within 1 s: on this one-process simulator, a sign the CPU is saturated rather than that a Machine is down)
    // or `status` (an answer other than 2xx).
    const probes = {served: 0, total: 0, refused: 0, timeout: 0, status: 0}
    /** Reads served over time: one point per probe round, overall and per region. */
    const timeline = []
    let probing = probe
    const t0 = Date.now()
    const prober = (async () => {
      while (probing) {
        const at = Date.now()
        const reads = await fleet.readAll(PROBE_PATH, {timeoutMs: 1000})
        const point = {t: at - t0, served: 0, total: 0, byRegion: {}}
        for (const r of reads) {
          if (!servingAtStart.has(r.id)) continue
          probes.total++
          point.total++
          const region = (point.byRegion[regionOf[r.id]] ??= [0, 0])
          region[1]++
          if (r.ok) {
            probes.served++
            point.served++
            region[0]++
          } else if (r.status !== null) probes.status++
          else if (/timeout|abort/i.test(r.error ?? '')) probes.timeout++
          else probes.refused++
        }
        timeline.push(point)
        await sleep(PROBE_INTERVAL_MS)
      }
    })()

    let returned = false
    let stop = false
    let lastReturn = t0
    let delivered = 0
    // The Function logs a JSON line per request: swallowed while this measurement runs.
    const log = console.log
    console.log = () => {}
    const invocations = pool(
      datas,
      concurrency,
      async (data) => {
        delivered++
        try {
          return {ok: true, report: await handler({context: {local: true, clientOptions}, event: {data}})}
        } catch (error) {
          return {ok: false, error: error instanceof Error ? error.message : String(error)}
        } finally {
          lastReturn = Date.now()
        }
      },
      () => stop,
    )
    void invocations.then(() => (returned = true))
    const deadline = t0 + limitMs
    const inFlight = () => api.log.slice(before.logLength).some((e) => e.status === null)
    let settled = false
    for (;;) {
      if (returned && !inFlight() && ids.every((id) => healthyNow(id) && freshAt(id, expectations) !== null)) {
        settled = true
        break
      }
      if (Date.now() >= deadline) break
      await sleep(20)
    }
    const end = Date.now()
    const after = counters()
    // Freshness as it stands at the end of the measurement (a cut one included: not after the drain below).
    const fresh = Object.fromEntries(ids.map((id) => [id, freshAt(id, expectations)]))
    const health = healthySince()
    probing = false
    await prober
    // Past the limit: deliver nothing more, and let the invocations in flight end (inside their own timeouts)
    // before this world closes, so none of them runs on into the next measurement.
    stop = true
    const drainStart = Date.now()
    if (!returned) await Promise.race([invocations, new Promise((resolve) => setTimeout(resolve, DRAIN_LIMIT_MS).unref())])
    const drainMs = Date.now() - drainStart
    const outcomes = (returned ? await invocations : []).filter(Boolean)
    console.log = log
    lastInvocationEnd = Math.max(lastInvocationEnd, lastReturn)

    const freshTimes = Object.values(fresh).filter((t) => t !== null)
    const allFresh = freshTimes.length === ids.length
    const freshHealthy = ids.map((id) => (fresh[id] !== null && health[id] !== null ? Math.max(fresh[id], health[id]) : null))
    const down = mostDown(t0, end)
    const leastServing = leastServingShare(t0, end)
    return {
      strategy,
      machines: ids.length,
      invocations: datas.length,
      delivered,
      settled,
      drainMs,
      limitMs,
      freshMachines: freshTimes.length,
      freshMs: allFresh ? Math.max(...freshTimes) - t0 : null,
      freshP50Ms: freshTimes.length ? quantile(freshTimes, 0.5) - t0 : null,
      freshHealthyMs: freshHealthy.every((t) => t !== null) ? Math.max(...freshHealthy) - t0 : null,
      notFreshAfterMs: allFresh ? null : end - t0,
      /** How long the measurement ran (the limit, when it was cut). */
      ranMs: end - t0,
      returnedMs: settled ? lastReturn - t0 : null,
      failedRuns: outcomes.filter((o) => !o.ok).length,
      firstError: outcomes.find((o) => !o.ok)?.error ?? null,
      restarts: after.restarts - before.restarts,
      restartCalls: after.restartCalls - before.restartCalls,
      apiCalls: after.requests - before.requests,
      rateLimited: after.rateLimited - before.rateLimited,
      appRequests: after.proxied - before.proxied,
      maxNotServing: down.notServing,
      maxNotHealthy: down.notHealthy,
      served: probe ? (probes.total ? probes.served / probes.total : 1) : null,
      probes: probe ? probes : null,
      timeline: probe ? timeline : null,
      /** The least share of each region's Machines serving at any instant (from the fleet's own records). */
      leastServingByRegion: leastServing,
      /** Per Machine, ms from the first delivery until it served the change (null: not fresh). */
      freshByMachine: Object.fromEntries(ids.map((id) => [id, fresh[id] === null ? null : fresh[id] - t0])),
    }
  }

  /** Per region, the least share of its Machines up (serving) at any instant in [from, to]. */
  function leastServingShare(from, to) {
    const avail = fleet.availability()
    const out = {}
    for (const region of new Set(Object.values(regionOf))) {
      const members = Object.entries(avail).filter(([id]) => regionOf[id] === region)
      const changes = []
      let up = 0
      for (const [id, a] of members) {
        const before = a.events.filter((e) => e.at <= from).at(-1)
        if (before?.up) up++
        for (const e of a.events) if (e.at > from && e.at <= to) changes.push({id, at: e.at, up: e.up})
      }
      const isUp = new Map(members.map(([id, a]) => [id, Boolean(a.events.filter((e) => e.at <= from).at(-1)?.up)]))
      let least = up
      for (const c of changes.sort((a, b) => a.at - b.at)) {
        if (isUp.get(c.id) === c.up) continue
        isUp.set(c.id, c.up)
        up += c.up ? 1 : -1
        least = Math.min(least, up)
      }
      out[region] = members.length ? least / members.length : null
    }
    return out
  }

  return {
    fleet,
    api,
    store,
    lake,
    clientOptions,
    env,
    ids,
    regionOf,
    eventData,
    expectationsFor,
    run,
    quiet,
    async close() {
      for (const app of apps.values()) app.close?.()
      await fleet.close()
      await lake.close()
      for (const [k, v] of Object.entries(savedEnv)) {
        if (v === undefined) delete process.env[k]
        else process.env[k] = v
      }
    },
  }
}

// ---------- measurements (each on a fresh world) ----------

/**
 * The floor: one plain signed POST of a fresh revision through the proxy, which picks one Machine (its edge region
 * first), timed from send to answer — and the same POST pinned to a Machine in the farthest region.
 */
export async function measureFloor(world, {count}) {
  const {fleet, store} = world
  const farRegion = Object.entries(fleet.latencyMs).filter(([r]) => Object.values(world.regionOf).includes(r)).sort((a, b) => b[1] - a[1])[0][0]
  const farMachine = world.ids.find((id) => world.regionOf[id] === farRegion)
  const post = async (forced) => {
    const {changes} = store.transaction([{patch: {id: 'page-floor', set: {title: `Floor ${Math.random()}`}}}])
    const [data] = await world.eventData(changes)
    const init = signedSyncRequest(data, {app: fleet.app, secret: SYNC_SECRET})
    if (forced) init.headers['fly-force-instance-id'] = forced
    const t = performance.now()
    const r = await fetch(`${fleet.url}${SYNC_PATH}`, init)
    await r.arrayBuffer()
    if (!r.ok) throw new Error(`floor POST answered ${r.status}`)
    return performance.now() - t
  }
  const proxied = []
  const farthest = []
  for (let i = 0; i < count; i++) {
    proxied.push(await post(null))
    farthest.push(await post(farMachine))
  }
  return {
    samples: proxied,
    p50: quantile(proxied, 0.5),
    p95: quantile(proxied, 0.95),
    farthest: {region: farRegion, samples: farthest, p50: quantile(farthest, 0.5), p95: quantile(farthest, 0.95)},
  }
}

/**
 * `count` single-document publishes, one at a time, each timed until every Machine serves it. `onProgress(i)` is
 * called before each.
 */
export async function measurePublishes(world, strategy, {count, limitMs, onProgress = () => {}}) {
  // A process that has run before has run before for this app: one publish first, not counted (every world is a
  // new app behind new URLs, which no process has listed yet).
  if (strategy === 'engine' || strategy === 'engine-nodeps') {
    const {changes} = world.store.transaction([{patch: {id: 'page-news', set: {title: 'News, before the measured editions'}}}])
    await world.quiet()
    await world.run({strategy, datas: await world.eventData(changes), expectations: world.expectationsFor(changes), limitMs})
  }
  const runs = []
  for (let i = 0; i < count; i++) {
    onProgress(i)
    const {changes} = world.store.transaction([{patch: {id: 'page-news', set: {title: `News, edition ${i + 1}`}}}])
    const datas = await world.eventData(changes)
    if (strategy.startsWith('engine')) await world.quiet()
    runs.push(await world.run({strategy, datas, expectations: world.expectationsFor(changes), limitMs}))
  }
  const times = runs.map((r) => r.freshMs).filter((t) => t !== null)
  const sum = (k) => runs.reduce((n, r) => n + r[k], 0)
  // Per Machine, the median time to fresh over the publishes (the picture of who waits for what).
  const byMachine = Object.fromEntries(
    world.ids.map((id) => {
      const own = runs.map((r) => r.freshByMachine[id]).filter((t) => t !== null)
      return [id, {region: world.regionOf[id], p50: own.length ? quantile(own, 0.5) : null}]
    }),
  )
  return {
    strategy,
    publishes: count,
    samples: runs.map((r) => r.freshMs),
    p50: times.length === runs.length ? quantile(times, 0.5) : null,
    p95: times.length === runs.length ? quantile(times, 0.95) : null,
    allFresh: times.length === runs.length,
    byMachine,
    restartsPerPublish: sum('restarts') / count,
    apiCallsPerPublish: sum('apiCalls') / count,
    rateLimited: sum('rateLimited'),
    failedRuns: sum('failedRuns'),
    maxNotServing: Math.max(...runs.map((r) => r.maxNotServing)),
    maxNotHealthy: Math.max(...runs.map((r) => r.maxNotHealthy)),
  }
}

/** `n` new pages published together; the Function is invoked once per document, `concurrency` at a time. */
export async function measureBurst(world, strategy, {n, concurrency, limitMs}) {
  const changes = []
  for (let i = 1; i <= n; i++) {
    const doc = {_id: `burst-${i}`, _type: 'page', title: `Burst item ${i}`, slug: {_type: 'slug', current: `burst-${i}`}}
    changes.push(...world.store.transaction([{createOrReplace: doc}]).changes)
  }
  const datas = await world.eventData(changes)
  if (strategy.startsWith('engine')) await world.quiet()
  return {n, concurrency, ...(await world.run({strategy, datas, expectations: world.expectationsFor(changes), limitMs, concurrency, probe: true}))}
}

/** A change of a type whose content is read at boot (siteSettings): it needs every Machine restarted. */
export async function measureRestartChange(world, strategy, {limitMs}) {
  const {changes} = world.store.transaction([{patch: {id: 'siteSettings', set: {title: 'Acme (v2)'}}}])
  const datas = await world.eventData(changes)
  if (strategy.startsWith('engine')) await world.quiet()
  return world.run({strategy, datas, expectations: world.expectationsFor(changes), limitMs, probe: true})
}
