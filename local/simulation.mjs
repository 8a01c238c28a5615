// The local simulation: a Fly app of N Machines (the local Fly: Machines API emulator + fleet, every Machine
// running the reference receiver), a document store standing in for Sanity, and the real Function handler.
// Each scripted step mutates content, turns every changed document into the Function event Sanity would send
// (the repo's blueprint, evaluated by groq-js), runs the handler, and then reads every affected route from every
// Machine to check that it is fresh — or that the Function's report says exactly which Machine is not, and why.
import {startFleet, DEFAULT_TOKEN} from './fly/index.mjs'
import {DocumentStore} from './content-lake/store.mjs'
import {eventsFor} from './sanity-events.mjs'
import {createApp} from './app.mjs'
import {applyFaults} from './faults.mjs'
import {handler} from '../function.ts'

export const SYNC_SECRET = 'simulation-sync-secret-0123456789'
const EDITORIAL_START = Date.parse('2026-11-27T09:00:00Z')
const PROBE_INTERVAL_MS = 100

const slugOf = (doc) => (typeof doc?.slug === 'object' && doc.slug !== null ? doc.slug.current : doc?.slug)

/** The app's own routes (local/app.mjs serves exactly these), to know what to read back. */
export function routeOf(doc) {
  if (!doc) return null
  if (doc._type === 'siteSettings') return '/settings'
  const slug = slugOf(doc)
  if (!slug) return null
  return doc._type === 'article' ? `/blog/${encodeURIComponent(slug)}` : `/${encodeURIComponent(slug)}`
}

function functionEnv({api, fleet, markets, budgetMs, restartTimeoutMs}) {
  const config = {
    version: 1,
    targets: [
      {
        name: 'web',
        app: fleet.app,
        machinesApiUrl: api.url,
        appUrl: fleet.url,
        types: ['page', 'article', 'siteSettings'],
        routes: {article: ['/blog/{slug}'], page: ['/{slug}'], siteSettings: ['/settings']},
        regions: {field: 'market', map: Object.fromEntries(Object.entries(markets).map(([m, r]) => [m, [r]])), unmapped: 'all'},
        restart: {types: ['siteSettings'], onRequest: true},
        maxUnavailable: 2,
        restartTimeoutMs,
      },
    ],
  }
  return {
    FLY_SYNC_CONFIG: JSON.stringify(config),
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SYNC_SECRET,
    FLY_SYNC_BUDGET_MS: String(budgetMs),
    FLY_SYNC_REQUEST_TIMEOUT_MS: '3000',
  }
}

/** Run the Function handler as Sanity would. */
async function invoke(data) {
  try {
    return {report: await handler({context: {local: true}, event: {data}})}
  } catch (error) {
    // A run that did not fully succeed throws, with its report attached.
    return {error: error instanceof Error ? error.message : String(error), report: error?.report ?? null}
  }
}

/** Run `work` with the Function's JSON log lines collected into `captured` instead of printed. */
async function capturingLogs(captured, work) {
  const original = console.log
  console.log = (line) => captured.push(String(line))
  try {
    return await work()
  } finally {
    console.log = original
  }
}

/**
 * @param {{scenario: object, machines?: number, regions?: string[], faults?: string, budgetMs?: number,
 *          restartTimeoutMs?: number, latencyMs?: Record<string, number>, onStep?: (step) => void}} options
 */
export async function runSimulation({scenario, machines = 24, regions = ['ord', 'fra', 'nrt'], faults = 'none', budgetMs = 60_000, restartTimeoutMs = 15_000, latencyMs, onStep}) {
  let editorialNow = EDITORIAL_START
  const store = new DocumentStore({now: () => editorialNow})
  store.transaction((scenario.seed ?? []).map((doc) => ({createOrReplace: doc})))

  /** machine id → app instance of its current boot */
  const apps = new Map()
  /** freshness records: {machine, id, rev, at, via: 'push' | 'boot'} */
  const applied = []
  const fleet = await startFleet({
    app: 'web',
    machines,
    regions,
    ...(latencyMs ? {latencyMs} : {}),
    handlerFor: (machine) => {
      const app = createApp(machine, {
        secret: SYNC_SECRET,
        source: {snapshot: async () => store.published()},
        onApplied: (m, change) => applied.push({machine: m.id, id: change.id, rev: change.rev, at: Date.now(), via: 'push'}),
      })
      apps.set(machine.id, app)
      return (request) => app.handle(request)
    },
    onBoot: async (machine) => {
      await apps.get(machine.id).boot()
      for (const doc of store.published()) applied.push({machine: machine.id, id: doc._id, rev: doc._rev, at: Date.now(), via: 'boot'})
    },
  })
  const api = fleet.api
  const markets = Object.fromEntries(Object.entries(scenario.markets ?? {}).filter(([, r]) => regions.includes(r)))
  const savedEnv = {...process.env}
  Object.assign(process.env, functionEnv({api, fleet, markets, budgetMs, restartTimeoutMs}))
  const faultPlan = applyFaults(faults, {api, fleet})
  const startedAt = Date.now()
  const steps = []
  try {
    for (const [index, step] of scenario.steps.entries()) {
      editorialNow += (scenario.stepSeconds ?? 30) * 1000
      faultPlan.beforeStep?.(index, step)
      const result = await runStep({index, step, store, api, fleet, applied, markets, probePath: scenario.probePath, advance: () => (editorialNow += 1000)})
      faultPlan.afterStep?.(index, step)
      steps.push(result)
      onStep?.(result)
    }
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in savedEnv)) delete process.env[key]
    Object.assign(process.env, savedEnv)
  }
  const timelines = api.timelines(fleet.app)
  const availability = fleet.availability()
  const result = {
    ok: steps.every((s) => s.ok),
    machines,
    regions,
    faults,
    startedAt,
    endedAt: Date.now(),
    steps,
    timelines,
    availability,
    faultsHit: structuredClone(api.stats.faults),
    explainedStale: steps.reduce((n, s) => n + s.stale.length - s.unexplained.length, 0),
    machineRegions: Object.fromEntries(api.machines(fleet.app).map((m) => [m.id, m.region])),
  }
  await fleet.close()
  return result
}

function mutationsFor(step, store) {
  if (step.release) {
    const {count, type, prefix} = step.release
    return Array.from({length: count}, (_, i) => ({
      createOrReplace: {_id: `${prefix}-${i + 1}`, _type: type, title: `Release item ${i + 1}`, slug: {_type: 'slug', current: `${prefix}-${i + 1}`}},
    }))
  }
  return step.mutations
}

async function runStep({index, step, store, api, fleet, applied, markets, probePath, advance}) {
  const started = Date.now()
  const statsBefore = structuredClone(api.stats)
  const servingAtStart = new Set(api.machines(fleet.app).filter((m) => m.state === 'started').map((m) => m.id))

  // Availability: read one page from every Machine that was serving, every 100 ms, until the step is done.
  let probing = true
  const probes = {served: 0, total: 0}
  const prober = (async () => {
    for (let round = 0; probing && round < 3000; round++) {
      const reads = await fleet.readAll(probePath ?? '/', {timeoutMs: 1000})
      for (const r of reads.filter((r) => servingAtStart.has(r.id))) {
        probes.total += 1
        if (r.ok) probes.served += 1
      }
      await new Promise((resolve) => setTimeout(resolve, PROBE_INTERVAL_MS))
    }
  })()

  // The content change, then the events Sanity would send for it.
  const first = store.transaction(mutationsFor(step, store))
  let changes = first.changes
  const deliveries = []
  for (const change of first.changes) for (const e of await eventsFor(change)) deliveries.push(e.data)
  if (step.then) {
    advance()
    const second = store.transaction(step.then)
    const later = []
    for (const change of second.changes) for (const e of await eventsFor(change)) later.push(e.data)
    // Reversed: the newer revision arrives first, the older one after it.
    deliveries.unshift(...later)
    changes = mergeChanges(first.changes, second.changes)
  }
  if (step.deliver === 'twice') deliveries.push(...deliveries.map((d) => structuredClone(d)))

  const captured = []
  const outcomes = await capturingLogs(captured, async () => {
    // A release is one transaction of many documents: Sanity invokes the Function for each, concurrently.
    if (step.deliver !== 'twice' && step.deliver !== 'reversed') return Promise.all(deliveries.map(invoke))
    const inOrder = []
    for (const data of deliveries) inOrder.push(await invoke(data))
    return inOrder
  })
  const reports = outcomes.map((o) => o.report).filter(Boolean)
  probing = false
  await prober

  const check = await verify({changes, store, api, fleet, applied, markets, reports, started})
  const statsAfter = api.stats
  const logs = captured.map((l) => JSON.parse(l))
  const result = {
    index: index + 1,
    label: step.label,
    startedAt: started,
    documents: changes.length,
    invocations: deliveries.length,
    pushes: logs.filter((l) => l.action === 'send' && l.kind === 'sync').length,
    restarts: (statsAfter.calls.restart ?? 0) - (statsBefore.calls.restart ?? 0),
    apiCalls: statsAfter.requests - statsBefore.requests,
    rateLimited: statsAfter.rateLimitedTotal - statsBefore.rateLimitedTotal,
    availability: probes.total ? probes.served / probes.total : 1,
    probes,
    durationMs: Date.now() - started,
    failedRuns: outcomes.filter((o) => o.error).map((o) => o.error),
    reports: reports.map(summarise),
    ...check,
  }
  result.ok = check.unexplained.length === 0
  return result
}

function mergeChanges(a, b) {
  const byId = new Map(a.map((c) => [c.id, {...c}]))
  for (const c of b) byId.set(c.id, byId.has(c.id) ? {id: c.id, before: byId.get(c.id).before, after: c.after} : c)
  return [...byId.values()]
}

/** Per Machine and route: is it fresh? If not, does some report say why? */
async function verify({changes, store, api, fleet, applied, markets, reports, started}) {
  const expectations = []
  for (const change of changes) {
    const now = store.get(change.id)
    const market = now?.market ?? change.before?.market
    const region = market && markets[market]
    const newRoute = routeOf(now)
    const oldRoute = routeOf(change.before)
    if (now && newRoute) expectations.push({id: change.id, path: newRoute, rev: now._rev, region})
    if (oldRoute && oldRoute !== newRoute) expectations.push({id: change.id, path: oldRoute, gone: true, region})
  }
  const serving = api.machines(fleet.app).filter((m) => m.state === 'started')
  const fresh = {}
  const stale = []
  const unexplained = []
  const explanations = explain(reports)
  let untargeted = 0
  for (const machine of serving) {
    let freshAt = started
    let ok = true
    const mine = expectations.filter((e) => !e.region || e.region === machine.region)
    if (mine.length === 0) {
      untargeted += 1
      continue
    }
    for (const e of mine) {
      const response = await fleet.fetchFrom(machine.id, e.path).catch(() => null)
      const body = response ? await response.json().catch(() => null) : null
      const good = e.gone ? response?.status === 404 : response?.status === 200 && (body?._rev === e.rev || body?.settings?._rev === e.rev)
      if (!good) {
        ok = false
        const why = explanations(machine.id)
        const entry = {machine: machine.id, region: machine.region, path: e.path, expected: e.gone ? 'gone' : e.rev, got: response?.status ?? 'no answer', why: why ?? null}
        stale.push(entry)
        if (!why) unexplained.push(entry)
        continue
      }
      if (!e.gone) {
        const record = applied.find((a) => a.machine === machine.id && a.id === e.id && a.rev === e.rev && a.at >= started)
        if (record) freshAt = Math.max(freshAt, record.at)
      } else {
        const record = applied.find((a) => a.machine === machine.id && a.id === e.id && a.at >= started)
        if (record) freshAt = Math.max(freshAt, record.at)
      }
    }
    if (ok) fresh[machine.id] = freshAt - started
  }
  const times = Object.values(fresh).sort((a, b) => a - b)
  return {
    fresh,
    freshMachines: times.length,
    servingMachines: serving.length - untargeted,
    untargeted,
    freshP50: times.length ? times[Math.floor((times.length - 1) / 2)] : null,
    freshMax: times.length ? times.at(-1) : null,
    stale,
    unexplained,
  }
}

/** A lookup: why does some report say this Machine was not synced or restarted? (`undefined`: none says so) */
function explain(reports) {
  const why = new Map()
  let wholeTarget
  for (const report of reports) {
    for (const target of report.targets ?? []) {
      if (target.error) wholeTarget = target.error.message
      for (const m of target.machines) {
        if (m.sync === 'failed') why.set(m.id, m.error?.message ?? 'sync failed')
        if (m.restart && m.restart.outcome !== 'restarted' && m.restart.outcome !== 'would_restart') {
          why.set(m.id, m.restart.error?.message ?? m.restart.reason ?? m.restart.outcome)
        }
      }
    }
  }
  return (id) => why.get(id) ?? wholeTarget
}

function summarise(report) {
  return {
    ok: report.ok,
    status: report.status,
    id: report.change.id,
    rev: report.change.rev,
    durationMs: report.durationMs,
    targets: report.targets.map((t) => ({
      status: t.status,
      synced: t.machines.filter((m) => m.sync === 'synced').length,
      skipped: t.machines.filter((m) => m.sync === 'skipped').length,
      failed: t.machines.filter((m) => m.sync === 'failed').map((m) => ({id: m.id, error: m.error?.message})),
      restart: t.restart ?? null,
      requests: t.requests,
      error: t.error?.message,
    })),
  }
}
