// The local simulation: a Fly app of N Machines (the local Fly: Machines API emulator + fleet, every Machine
// running the demo app with the reference receiver and its catch-up), a local Content Lake edited through the real
// @sanity/client, and the real Function handler. Every committed transaction is turned into the Function events
// Sanity would send — the repo's blueprint (on, filter, projection) evaluated by groq-js — and the handler runs
// them. After each step every started Machine is checked: fresh by push, caught up by reconciliation within one
// interval plus one query (with how long it was stale), or — a failure — still stale. The pages that show a changed
// document through a reference (a post shows its author) are checked too: read by visitors before the change (so
// each Machine holds them rendered), they must show the new content after it, dropped by the push's invalidation.
// Steps marked `syncTags` also run the sync-tag Function with the tags the lake announced for the step's commits:
// every Machine's live pages (rendered from queries, cached under their sync tags) that showed the change must be
// dropped by that push, and `done` must come after the last Machine's answer.
import {createClient} from '@sanity/client'
import {isDeepStrictEqual} from 'node:util'
import {startFleet, DEFAULT_TOKEN} from './fly/index.mjs'
import {startMachinesApi} from './fly/machines-api.mjs'
import {startLiteFs} from './litefs.mjs'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {DocumentStore} from './content-lake/store.mjs'
import {startContentLake} from './content-lake/server.mjs'
import {eventsFor} from './sanity-events.mjs'
import {createApp, renderPage} from './app.mjs'
import {applyFaults} from './faults.mjs'
import {Worker} from 'node:worker_threads'
import {handler} from '../function.ts'
import {blueprintResources} from './blueprint-resources.mjs'
import {SYNC_TAG_BUDGET_SECONDS} from '../blueprint/index.ts'

export const SYNC_SECRET = 'simulation-sync-secret-0123456789'
const SANITY_TOKEN = 'simulation-sanity-token'
const PROBE_INTERVAL_MS = 100
/** Beyond one catch-up interval, what one query (and its applies) may take. */
const QUERY_ALLOWANCE_MS = 3_000

const slugOf = (doc) => (typeof doc?.slug === 'object' && doc.slug !== null ? doc.slug.current : doc?.slug)

/** The app's own routes (local/app.mjs serves exactly these). */
export function routeOf(doc) {
  if (!doc) return null
  if (doc._type === 'siteSettings') return '/settings'
  const slug = slugOf(doc)
  if (!slug) return null
  return doc._type === 'article' ? `/blog/${encodeURIComponent(slug)}` : `/${encodeURIComponent(slug)}`
}

function functionEnv({api, fleet, lake, markets, budgetMs, restartTimeoutMs, types, dependents, litefs}) {
  const config = {
    version: 1,
    targets: [
      {
        name: 'web',
        app: fleet.app,
        machinesApiUrl: api.url,
        appUrl: fleet.url,
        types,
        routes: {article: ['/blog/{slug}'], page: ['/{slug}'], siteSettings: ['/settings']},
        // With LiteFS every Machine's replica holds every document: no region rule, the litefs fan-out.
        ...(litefs
          ? {fanOut: 'litefs'}
          : {regions: {field: 'market', map: Object.fromEntries(Object.entries(markets).map(([m, r]) => [m, [r]])), unmapped: 'all'}}),
        restart: {types: ['siteSettings'], onRequest: true},
        maxUnavailable: 2,
        restartTimeoutMs,
        // The documents referencing a change (its dependents) ride in its push; `false` in a scenario turns it off.
        ...(dependents !== undefined ? {dependents} : {}),
      },
    ],
  }
  return {
    FLY_SYNC_CONFIG: JSON.stringify(config),
    // The Function's context names the project and dataset (clientOptions, below); their queries go to the local lake.
    SANITY_API_HOST: lake.url,
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SYNC_SECRET,
    FLY_SYNC_BUDGET_MS: String(budgetMs),
    FLY_SYNC_REQUEST_TIMEOUT_MS: '3000',
  }
}

/**
 * Run the Function handler as Sanity would. `context.invoke` runs the Function it names (the resume Function is
 * the same handler) the way Sanity does, without the caller waiting: its run is added to `runs`, which the step
 * awaits before it checks freshness.
 */
/** The blueprint's resources, as the CLI hands them to a run (the resume Function is found there). */
const resources = blueprintResources()

async function invoke(data, runs, clientOptions) {
  const context = {local: true, clientOptions, resources, invoke: async (_name, next) => void runs.push(invoke(next, runs, clientOptions))}
  try {
    return {report: await handler({context, event: {data}})}
  } catch (error) {
    // A run that did not fully succeed throws, with its report attached.
    return {error: error instanceof Error ? error.message : String(error), report: error?.report ?? null}
  }
}

/**
 * A run Sanity kills at its timeout: the handler in a worker thread, terminated after `killAfterMs` wherever it
 * is (its requests in flight were sent). The Function's log lines go to `captured`.
 */
function invokeKilledAt(data, killAfterMs, runs, captured, clientOptions) {
  return new Promise((resolve) => {
    const worker = new Worker(new URL('./function-worker.mjs', import.meta.url), {workerData: {data, clientOptions}, env: {...process.env}, stdout: true})
    worker.stdout.setEncoding('utf8')
    let buffer = ''
    worker.stdout.on('data', (chunk) => {
      buffer += chunk
      const lines = buffer.split('\n')
      buffer = lines.pop()
      captured.push(...lines.filter(Boolean))
    })
    let outcome = null
    worker.on('message', (message) => {
      if (message.type === 'invoke') runs.push(invoke(message.data, runs, clientOptions))
      else outcome = message
    })
    const timer = setTimeout(() => void worker.terminate(), killAfterMs)
    worker.on('exit', () => {
      clearTimeout(timer)
      resolve(outcome ?? {killed: true, error: `killed at its timeout (${killAfterMs} ms)`, report: null})
    })
  })
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
 * Each Machine's connection to Sanity, which the simulation can cut (a network partition) or freeze (a suspended
 * Machine's process does not run; its queries go out when it resumes).
 */
function sanityLinks(lake) {
  const cut = new Set()
  const frozen = new Map() // id → {promise, release}
  let held = null // {promise, release}: every Machine's queries wait (hold/release)
  const inFlight = new Set()
  return {
    cut,
    clientFor(id) {
      const client = createClient({...lake.clientConfig(), token: SANITY_TOKEN})
      return {
        async fetch(query, params, options) {
          await frozen.get(id)?.promise
          while (held) await held.promise
          if (cut.has(id)) throw new Error('network unreachable (cut off)')
          const request = client.fetch(query, params, options)
          inFlight.add(request)
          try {
            return await request
          } finally {
            inFlight.delete(request)
          }
        },
      }
    },
    /** Every Machine's reconciliation waits from now until `release()`; resolves once the queries already sent are answered. */
    async hold() {
      let release
      const promise = new Promise((r) => (release = r))
      held = {promise, release}
      await Promise.allSettled([...inFlight])
    },
    release() {
      held?.release()
      held = null
    },
    freeze(id) {
      let release
      const promise = new Promise((r) => (release = r))
      frozen.set(id, {promise, release})
    },
    thaw(id) {
      frozen.get(id)?.release()
      frozen.delete(id)
    },
  }
}

/**
 * @param {{scenario: object, machines?: number, regions?: string[], faults?: string, budgetMs?: number,
 *          restartTimeoutMs?: number, latencyMs?: Record<string, number>, onStep?: (step) => void,
 *          store?: 'memory' | 'sqlite', litefs?: boolean, replicationDelayMs?: number}} options
 *   `store`: where each Machine's receiver keeps its state (sqlite: a file per Machine that survives its restarts,
 *   as on a Fly Volume); `litefs`: the files on a LiteFS stand-in (local/litefs.mjs), the primary the first Machine
 *   of the first region, and the Function's `litefs` fan-out.
 */
export async function runSimulation({scenario, machines = 24, regions = ['ord', 'fra', 'nrt'], faults = 'none', budgetMs = 60_000, restartTimeoutMs = 15_000, latencyMs, onStep, store: stateStore = 'memory', litefs = false, replicationDelayMs = 150}) {
  const durable = stateStore === 'sqlite' || litefs
  const root = durable ? mkdtempSync(join(tmpdir(), 'fly-sync-sim-')) : null
  // The Content Lake's clock is the wall clock (Sanity's and Fly's agree): a Machine that booted before a change
  // owes its restart, one that booted after runs it. Each step moves it on by at least a second, so revisions
  // of different steps never share `_updatedAt` (Sanity writes it to the second).
  let editorialNow = Date.now()
  const tick = () => (editorialNow = Math.max(Date.now(), editorialNow + 1000))
  const store = new DocumentStore({now: () => editorialNow})
  const lake = await startContentLake({store, token: SANITY_TOKEN})
  const editor = createClient({...lake.clientConfig(), token: SANITY_TOKEN})
  // What Sanity hands the Function as context.clientOptions: the project and dataset of the change, its robot token.
  const clientOptions = {projectId: lake.projectId, dataset: lake.dataset, token: SANITY_TOKEN}
  const types = scenario.types ?? ['page', 'article', 'siteSettings']
  const catchUpSeconds = scenario.catchUpSeconds ?? 2
  if ((scenario.seed ?? []).length) {
    const tx = editor.transaction()
    for (const doc of scenario.seed) tx.createOrReplace(doc)
    await tx.commit()
  }

  // Sanity's side: every committed transaction, as Function events (delivered by each step, as it says).
  const committed = []
  store.onCommit((tx) => committed.push(tx))

  const links = sanityLinks(lake)
  /** machine id → app instance of its current boot */
  const apps = new Map()
  /** when content went live on a Machine: {machine, id, rev, op, at, via} */
  const applied = []
  /** when a Machine dropped cached pages: {machine, path, at, via} */
  const invalidated = []
  /** when a Machine answered a sync-tag push: {machine, at (performance.now()), status} */
  const tagAnswers = []
  /** what the lake announced since the last step took it: {id, at, tags} */
  const announced = []
  lake.onSyncTags((event) => announced.push(event))
  /** every boot: {machine, boot, at, ms, applied, unchanged, since, replicaOf} (the boot's catch-up run) */
  const boots = []
  // LiteFS: the Machines are known before the fleet boots them, so that each knows the primary from the start.
  const ownApi = litefs ? await startMachinesApi({apps: {web: {machines, regions}}}) : null
  const liteFs = ownApi
    ? (() => {
        const all = ownApi.machines('web')
        // The primary: the last Machine of the first region (by id), so the scenario's faults (`ord#0`, `nrt#0`, …)
        // meet replicas, which catch up by what the primary recorded.
        const primary = all.filter((m) => m.region === regions[0]).map((m) => m.id).sort().at(-1)
        return startLiteFs({root, machines: all.map((m) => m.id), primary, delayMs: replicationDelayMs})
      })()
    : null
  const fleet = await startFleet({
    app: 'web',
    machines,
    regions,
    ...(ownApi ? {api: ownApi} : {}),
    ...(latencyMs ? {latencyMs} : {}),
    handlerFor: (machine) => {
      apps.get(machine.id)?.close()
      const app = createApp(machine, {
        secret: SYNC_SECRET,
        client: links.clientFor(machine.id),
        types,
        intervalSeconds: catchUpSeconds,
        onApplied: (m, change, via) => applied.push({machine: m.id, id: change.id, rev: change.rev, op: change.op, at: Date.now(), via}),
        onInvalidated: (m, paths, via) => {
          for (const path of paths) invalidated.push({machine: m.id, path, at: Date.now(), via})
        },
        onTagsAnswered: (m, answer) => tagAnswers.push({machine: m.id, ...answer}),
        store: durable ? 'sqlite' : 'memory',
        storePath: liteFs ? liteFs.dbFor(machine.id) : root && join(root, `${machine.id}.db`),
        litefs: liteFs ? {dir: liteFs.dirFor(machine.id), primary: liteFs.isPrimary(machine.id)} : undefined,
      })
      apps.set(machine.id, app)
      return (request) => app.handle(request)
    },
    onBoot: async (machine) => {
      const started = Date.now()
      // LiteFS starts a replica's app once it has synced with the primary.
      if (liteFs && !liteFs.isPrimary(machine.id)) await liteFs.synced()
      const run = await apps.get(machine.id).boot()
      boots.push({machine: machine.id, boot: machine.boot, at: Date.now(), ms: Date.now() - started, applied: run?.applied ?? 0, unchanged: run?.unchanged ?? 0, since: run?.since ?? null, replicaOf: run?.replicaOf ?? null})
      const settings = apps.get(machine.id).read('/settings')
      if (settings) applied.push({machine: machine.id, id: settings._id, rev: settings._rev, op: 'upsert', at: Date.now(), via: 'boot'})
    },
  })
  const api = fleet.api
  // Under LiteFS every Machine holds every document: no market is one region's.
  const markets = litefs ? {} : Object.fromEntries(Object.entries(scenario.markets ?? {}).filter(([, r]) => regions.includes(r)))
  const savedEnv = {...process.env}
  Object.assign(process.env, functionEnv({api, fleet, lake, markets, budgetMs, restartTimeoutMs, types, dependents: scenario.dependents, litefs}))
  const faultPlan = applyFaults(faults, {api, fleet})
  const ctx = {store, editor, api, fleet, apps, applied, invalidated, tagAnswers, announced, markets, links, committed, catchUpSeconds, clientOptions, probePath: scenario.probePath, livePages: scenario.livePages ?? [], pending: []}
  const startedAt = Date.now()
  const steps = []
  try {
    for (const [index, step] of scenario.steps.entries()) {
      tick()
      faultPlan.beforeStep?.(index, step)
      const firstBoot = boots.length
      const result = await runStep({...ctx, index, step, advance: tick})
      result.restartCatchUp = catchUpSummary(boots.slice(firstBoot).filter((b) => b.boot > 1))
      faultPlan.afterStep?.(index, step)
      steps.push(result)
      onStep?.(result)
    }
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in savedEnv)) delete process.env[key]
    Object.assign(process.env, savedEnv)
  }
  const result = {
    ok: steps.every((s) => s.ok),
    machines,
    regions,
    faults,
    catchUpSeconds,
    startedAt,
    endedAt: Date.now(),
    steps,
    timelines: api.timelines(fleet.app),
    availability: fleet.availability(),
    faultsHit: structuredClone(api.stats.faults),
    apiLog: api.log.map(({at, endedAt, method, action, machine, status}) => ({at, endedAt, method, action, machine, status})),
    leases: api.leases(fleet.app),
    caughtUp: steps.reduce((n, s) => n + s.caughtUp.length, 0),
    dependentPages: steps.reduce((n, s) => n + s.dependents.freshByPush, 0),
    sanityRequests: lake.log.length,
    machineRegions: Object.fromEntries(api.machines(fleet.app).map((m) => [m.id, m.region])),
    store: durable ? 'sqlite' : 'memory',
    litefs: liteFs ? {primary: liteFs.primary, replicationDelayMs, copies: liteFs.stats.copies} : null,
    // The boot runs of restarted Machines: how long they took and how much they read, with this store.
    restartCatchUp: catchUpSummary(boots.filter((b) => b.boot > 1)),
  }
  for (const app of apps.values()) app.close()
  await fleet.close()
  if (ownApi) await ownApi.close()
  liteFs?.close()
  await lake.close()
  if (root) rmSync(root, {recursive: true, force: true})
  return result
}

/** Restarted Machines' boot runs: how many, how long (p50, max), how much each read, and from where. */
function catchUpSummary(list) {
  if (list.length === 0) return null
  const ms = list.map((b) => b.ms).sort((a, b) => a - b)
  const read = list.map((b) => b.applied + b.unchanged).sort((a, b) => a - b)
  return {
    boots: list.length,
    p50Ms: ms[Math.floor((ms.length - 1) / 2)],
    maxMs: ms.at(-1),
    readP50: read[Math.floor((read.length - 1) / 2)],
    appliedP50: list.map((b) => b.applied).sort((a, b) => a - b)[Math.floor((list.length - 1) / 2)],
    fromMark: list.filter((b) => b.since !== null).length,
    replicas: list.filter((b) => b.replicaOf !== null).length,
  }
}

/** `nrt#0` → the first started Machine in nrt (by id); `#2` → the third of all. */
function pick(api, app, selector) {
  const [region, n] = selector.split('#')
  const pool = api.machines(app).filter((m) => !region || m.region === region).sort((a, b) => a.id.localeCompare(b.id))
  const machine = pool[Number(n) || 0] ?? api.machines(app)[0]
  return machine.id
}

/** Edit as an editor does: a draft, then publish (the published document replaced, the draft removed). */
async function publishEdits(editor, edits) {
  const tx = editor.transaction()
  for (const {id, set} of edits) {
    const published = await editor.getDocument(id)
    if (!published) throw new Error(`scenario: no published document ${id} to edit`)
    const draftId = `drafts.${id}`
    await editor.createOrReplace({...published, _id: draftId})
    const draft = await editor.patch(draftId).set(set).commit()
    const {_rev, _updatedAt, _createdAt, ...fields} = draft
    tx.createOrReplace({...fields, _id: id}).delete(draftId)
  }
  await tx.commit()
}

async function mutate(editor, step, which = 'main') {
  if (which === 'then') return publishEdits(editor, step.then)
  if (step.publish) {
    for (const doc of step.publish) await editor.createOrReplace({...doc, _id: `drafts.${doc._id}`})
    const tx = editor.transaction()
    for (const doc of step.publish) tx.createOrReplace(doc).delete(`drafts.${doc._id}`)
    await tx.commit()
  }
  if (step.edit) await publishEdits(editor, step.edit)
  if (step.delete) {
    const tx = editor.transaction()
    for (const id of step.delete) tx.delete(id).delete(`drafts.${id}`)
    await tx.commit()
  }
  if (step.release) {
    // A content release is published as one transaction of many documents.
    const {count, type, prefix} = step.release
    const tx = editor.transaction()
    for (let i = 1; i <= count; i++) tx.createOrReplace({_id: `${prefix}-${i}`, _type: type, title: `Release item ${i}`, slug: {_type: 'slug', current: `${prefix}-${i}`}})
    await tx.commit()
  }
}

/** The Function events Sanity sends for the transactions committed since the last call. */
async function drainEvents(committed) {
  const deliveries = []
  const changes = []
  for (const tx of committed.splice(0)) {
    for (const change of tx.changes) {
      changes.push({...change, at: Date.now()})
      for (const e of await eventsFor(change)) deliveries.push(e.data)
    }
  }
  return {deliveries, changes}
}

/** Does `value` (a document, deep) reference any of `ids`? */
function referencesAny(value, ids, depth = 0) {
  if (value === null || typeof value !== 'object' || depth > 32) return false
  if (typeof value._ref === 'string' && ids.has(value._ref)) return true
  return Object.values(value).some((child) => referencesAny(child, ids, depth + 1))
}

/** The published documents in the lake that reference any of `ids`, with a page of their own. */
function referrers(store, ids) {
  const wanted = new Set(ids)
  return store.published().filter((doc) => !wanted.has(doc._id) && routeOf(doc) && referencesAny(doc, wanted))
}

/** The ids of the documents a step changes. */
const stepIds = (step) =>
  [...(step.edit ?? []).map((e) => e.id), ...(step.then ?? []).map((e) => e.id), ...(step.delete ?? []), ...(step.publish ?? []).map((d) => d._id)]

/**
 * The sync-tag Function as Sanity runs it: one invocation per announcement, `event.data = {syncTags}`, and a `done`
 * callback whose calls are recorded (`performance.now()`). Its budget is the one the blueprint helper gives it.
 */
async function invokeSyncTags(announcements, clientOptions) {
  const budget = process.env.FLY_SYNC_BUDGET_MS
  process.env.FLY_SYNC_BUDGET_MS = String(SYNC_TAG_BUDGET_SECONDS * 1000)
  try {
    return await Promise.all(
      announcements.map(async ({tags}) => {
        const done = []
        const callback = async (given) => (done.push({at: performance.now(), tags: given}), new Response(null, {status: 204}))
        const context = {local: true, clientOptions}
        try {
          return {tags, done, report: await handler({context, event: {data: {syncTags: tags}}, done: callback})}
        } catch (error) {
          return {tags, done, error: error instanceof Error ? error.message : String(error), report: error?.report ?? null}
        }
      }),
    )
  } finally {
    process.env.FLY_SYNC_BUDGET_MS = budget
  }
}

/** What a live page shows when fresh: the post at `path` rendered over the lake's documents (null: none). */
function freshLive(store, path) {
  const slug = decodeURIComponent(path.replace(/^\/live\/blog\//, ''))
  const doc = store.published().find((d) => d._type === 'article' && d.slug?.current === slug)
  return doc ? renderPage(doc, (ref) => store.get(ref)) : null
}

async function runStep(ctx) {
  const {index, step, store, editor, api, fleet, apps, applied, links, committed, probePath, clientOptions, livePages, announced, tagAnswers, invalidated} = ctx
  // Before the step (and its faults), visitors read the pages that show the documents about to change through a
  // reference, on every Machine: each then holds them rendered with the old content, which only an invalidation
  // drops. In a sync-tag step they also read the live pages: each caches them under its query's sync tags.
  const startedBefore = new Set(api.machines(fleet.app).filter((m) => m.state === 'started').map((m) => m.id))
  const warm = {pages: 0, reads: 0}
  for (const doc of referrers(store, stepIds(step))) {
    warm.pages += 1
    for (const r of await fleet.readAll(routeOf(doc), {timeoutMs: 2000})) if (startedBefore.has(r.id) && r.ok) warm.reads += 1
  }
  const liveBefore = new Map() // `${machine} ${path}` → the page as served before the step
  if (step.syncTags) {
    for (const path of livePages) {
      for (const r of await fleet.readAll(path, {timeoutMs: 2000})) if (startedBefore.has(r.id) && r.ok) liveBefore.set(`${r.id} ${path}`, r.json)
    }
  }
  const started = Date.now()
  const statsBefore = structuredClone(api.stats)
  const fault = step.fault ?? {}
  const during = []
  if (fault.cutOff) cutOff(ctx, pick(api, fleet.app, fault.cutOff))
  if (fault.restore) restore(ctx, pick(api, fleet.app, fault.restore))
  if (fault.suspend) {
    const id = pick(api, fleet.app, fault.suspend)
    links.freeze(id)
    api.control.setState(id, 'suspended')
  }
  if (fault.resume) {
    const id = pick(api, fleet.app, fault.resume)
    api.control.start(id)
    await fleet.waitUp(id)
    links.thaw(id)
  }
  if (fault.cutOffDuring) {
    const id = pick(api, fleet.app, fault.cutOffDuring)
    cutOff(ctx, id)
    during.push(() => restore(ctx, id))
  }
  if (fault.appDownDuring) {
    fleet.faults.appDown('503')
    during.push(() => fleet.faults.appUp())
  }
  const servingAtStart = new Set(api.machines(fleet.app).filter((m) => m.state === 'started').map((m) => m.id))
  // A reconciliation that read the change before the push arrived would hold the document already, and the push
  // would be acknowledged as stale without its invalidation (docs/dependents.md, "Limits"): steps that check
  // dependents hold reconciliation while the Function runs, so the check is of the push alone.
  if (step.holdReconciliation) await links.hold()
  announced.splice(0)

  // Availability: read one page from every Machine that was serving, every 100 ms, until the runs are done.
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

  await mutate(editor, step)
  let {deliveries, changes} = await drainEvents(committed)
  if (step.then) {
    ctx.advance()
    await mutate(editor, step, 'then')
    const later = await drainEvents(committed)
    // Reversed: the newer revision's event arrives first, the older one after it.
    deliveries = [...later.deliveries, ...deliveries]
    changes = [...changes, ...later.changes]
  }
  if (step.deliver === 'twice') deliveries = [...deliveries, ...deliveries.map((d) => structuredClone(d))]
  // A reconciliation that reads the change before the Function's push arrives (the interval fell in between).
  if (step.reconcileFirst) {
    links.release()
    await Promise.all(api.machines(fleet.app).filter((m) => m.state === 'started').map((m) => apps.get(m.id)?.reconcile()))
  }

  const captured = []
  const runs = []
  const outcomes = await capturingLogs(captured, async () => {
    const first = await (async () => {
      if (fault.killRunAfterMs) return Promise.all(deliveries.map((data) => invokeKilledAt(data, fault.killRunAfterMs, runs, captured, clientOptions)))
      // A release is one transaction of many documents: Sanity invokes the Function for each, concurrently.
      if (step.deliver !== 'twice' && step.deliver !== 'reversed') return Promise.all(deliveries.map((data) => invoke(data, runs, clientOptions)))
      const inOrder = []
      for (const data of deliveries) inOrder.push(await invoke(data, runs, clientOptions))
      return inOrder
    })()
    // Continuations (resume runs the runs handed a roll to) run on; the step is over when they are.
    for (let i = 0; i < runs.length; i++) first.push(await runs[i])
    return first
  })
  // The sync-tag Function, for the tags the step's commits invalidated (steps that say `syncTags` only).
  const answersFrom = tagAnswers.length
  const tagRuns = step.syncTags ? await capturingLogs(captured, () => invokeSyncTags(announced.splice(0), clientOptions)) : []
  probing = false
  await prober
  links.release()
  for (const undo of during) await undo()
  const reports = [...outcomes, ...tagRuns].map((o) => o.report).filter(Boolean)

  const check = await settle({...ctx, changes, reports, started, killed: outcomes.some((o) => o.killed)})
  const live = step.syncTags ? await checkLive({apps, store, livePages, liveBefore, invalidated, started, explain: explainer(reports)}) : null
  const answers = tagAnswers.slice(answersFrom)
  const statsAfter = api.stats
  const logs = captured.map((l) => JSON.parse(l))
  // Every log line and report of every run, scanned for the token and the secrets the Function was given.
  const secrets = [SYNC_SECRET, DEFAULT_TOKEN, SANITY_TOKEN]
  const leaks = [...captured, ...reports.map((r) => JSON.stringify(r))].filter((text) => secrets.some((secret) => text.includes(secret))).length
  const result = {
    index: index + 1,
    label: step.label,
    startedAt: started,
    documents: new Set(changes.map((c) => c.id)).size,
    invocations: deliveries.length + tagRuns.length,
    continuations: runs.length,
    killedRuns: outcomes.filter((o) => o.killed).length,
    killedAt: fault.killRunAfterMs ? started + fault.killRunAfterMs : null,
    // One log line per batch of requests (a fan-out's pushes are one batch): count its requests.
    pushes: logs.filter((l) => l.action === 'send' && l.kind === 'sync').reduce((n, l) => n + (l.ids?.length ?? 1), 0),
    restarts: (statsAfter.calls.restart ?? 0) - (statsBefore.calls.restart ?? 0),
    apiCalls: statsAfter.requests - statsBefore.requests,
    rateLimited: statsAfter.rateLimitedTotal - statsBefore.rateLimitedTotal,
    availability: probes.total ? probes.served / probes.total : 1,
    probes,
    durationMs: Date.now() - started,
    warmed: warm,
    failedRuns: outcomes.filter((o) => o.error).map((o) => o.error),
    logLines: captured.length,
    leaks,
    reports: reports.map(summarise),
    // Each sync-tag run: how many tags, when `done` was called (and how often), and when the last Machine answered.
    syncTagRuns: tagRuns.map((run) => ({
      tags: run.tags.length,
      doneCalls: run.done.length,
      doneAt: run.done[0]?.at ?? null,
      doneTags: run.done[0]?.tags ?? null,
      answers: answers.length,
      lastAnswerAt: answers.length ? Math.max(...answers.map((a) => a.at)) : null,
      error: run.error ?? null,
    })),
    live,
    ...check,
  }
  // Stale after the convergence window is acceptable only where the Function's report says which and why.
  result.ok = check.stale.every((st) => st.why) && (live?.stale ?? []).every((st) => st.why) && leaks === 0
  return result
}

/**
 * After a sync-tag step: every live page on every Machine that served it before, read now. A page whose content
 * changed must show the new content, dropped by the tags push. A page whose content did not change may still have
 * been dropped (`droppedUnchanged`): the local lake tags an answer with every document its query looked at
 * (local/content-lake/README.md). Stale pages are explained by the reports or not.
 */
async function checkLive({apps, store, livePages, liveBefore, invalidated, started, explain}) {
  const out = {pages: livePages, checks: 0, freshByTags: 0, unchanged: 0, droppedUnchanged: 0, stale: []}
  for (const [key, before] of liveBefore) {
    const [machine, path] = key.split(' ')
    const app = apps.get(machine)
    if (!app) continue
    out.checks += 1
    const expected = freshLive(store, path)
    const byTags = invalidated.some((i) => i.machine === machine && i.path === path && i.via === 'tags' && i.at >= started)
    let now
    try {
      now = await app.readLive(path)
    } catch (error) {
      now = {error: error instanceof Error ? error.message : String(error)}
    }
    if (isDeepStrictEqual(before, expected)) {
      out.unchanged += 1
      if (byTags) out.droppedUnchanged += 1
    } else if (isDeepStrictEqual(now, expected) && byTags) {
      out.freshByTags += 1
    } else {
      out.stale.push({machine, path, shows: now, expected, why: explain(machine) ?? null})
    }
  }
  return out
}

function cutOff(ctx, id) {
  ctx.fleet.faults.unreachable(id, {mode: 'reset'})
  ctx.links.cut.add(id)
}

function restore(ctx, id) {
  ctx.fleet.faults.reachable(id)
  ctx.links.cut.delete(id)
}

/**
 * Which documents changed, where they were before, and which region they are for; then the pages that show one of
 * them through a reference (its dependents, found here by scanning the lake, not by the Function's query), which
 * must show the new content wherever the change went.
 */
function expectationsFor(changes, store, markets) {
  const latest = new Map()
  for (const c of changes) {
    if (c.id.startsWith('drafts.') || c.id.startsWith('versions.')) continue
    const first = latest.get(c.id)
    latest.set(c.id, {id: c.id, before: first?.before ?? c.before, at: first?.at ?? c.at})
  }
  const documents = [...latest.values()].map(({id, before, at}) => {
    const market = store.get(id)?.market ?? before?.market
    return {kind: 'document', id, at, oldPath: routeOf(before), region: market ? markets[market] : undefined}
  })
  const pages = []
  for (const e of documents) {
    for (const doc of referrers(store, [e.id])) {
      if (!pages.some((p) => p.id === doc._id) && !latest.has(doc._id)) pages.push({kind: 'page', id: doc._id, path: routeOf(doc), shows: e.id, at: e.at, region: e.region})
    }
  }
  return [...documents, ...pages]
}

/** What the page at `path` shows when fresh: rendered over the lake's documents. */
function freshPage(store, path, id) {
  const doc = store.get(id)
  return doc && routeOf(doc) === path ? renderPage(doc, (ref) => store.get(ref)) : null
}

/**
 * Does this app show document `e.id` as Sanity has it now — its newest revision at its current route, nothing at
 * the route it had before (rename), nothing at all once deleted? Read in-process (what GET would serve), so a
 * cut-off Machine can be checked too.
 */
function met(app, e, store) {
  if (!app) return false
  if (e.kind === 'page') return isDeepStrictEqual(app.read(e.path), freshPage(store, e.path, e.id))
  const now = store.get(e.id)
  const path = routeOf(now)
  // A document without a page of its own (an author, a category): held at its newest revision, or gone.
  if (!path && !e.oldPath) return now ? app.docs.get(e.id)?._rev === now._rev : !app.docs.has(e.id)
  const oldGone = !e.oldPath || e.oldPath === path || app.read(e.oldPath)?._id !== e.id
  if (!now) return !app.docs.has(e.id) && oldGone
  return app.read(path)?._rev === now._rev && oldGone
}

/** Merge held-over expectations of one Machine: each document once, from its first change. */
function mergeHeld(into, list) {
  for (const e of list) {
    const same = into.find((x) => x.id === e.id && x.kind === e.kind)
    if (!same) into.push(e)
    else if (e.at < same.at) same.at = e.at
  }
}

/**
 * After the runs: which Machines are fresh (and since when, by push or by catch-up)? Stale ones get one catch-up
 * interval plus one query to converge. Machines deliberately cut off or suspended are held over and checked
 * again once they are back.
 */
async function settle({changes, store, markets, api, fleet, apps, applied, invalidated, links, reports, started, catchUpSeconds, pending, killed}) {
  const expectations = expectationsFor(changes, store, markets)
  const serving = api.machines(fleet.app).filter((m) => m.state === 'started' || m.state === 'suspended')
  const away = (id) => links.cut.has(id) || api.state(id) === 'suspended'
  const explain = explainer(reports)
  const fresh = {}
  const caughtUp = []
  const stale = []
  const pagesSeen = []
  // A page is fresh from the invalidation that dropped it (the next read renders it anew).
  const pageRecord = (id, e) => invalidated.filter((i) => i.machine === id && i.path === e.path && i.at >= e.at).at(-1)
  let untargeted = 0
  let checked = 0
  const waiting = []
  // Expectations held over from earlier steps: checked once the Machine is back.
  const held = new Map(pending.splice(0).map((p) => [p.machine.id, p]))
  for (const machine of serving) {
    const mine = expectations.filter((e) => !e.region || e.region === machine.region)
    if (mine.length === 0) untargeted += 1
    const before = held.get(machine.id)
    if (away(machine.id)) {
      if (mine.length || before) {
        const list = before ? before.list : []
        mergeHeld(list, mine)
        pending.push({machine, list})
      }
      continue
    }
    if (before) waiting.push({...before, since: Date.now(), heldOver: true})
    if (mine.length) {
      checked += 1
      waiting.push({machine, list: mine, since: started})
    }
  }
  const deadline = () => Date.now() + catchUpSeconds * 1000 + QUERY_ALLOWANCE_MS
  const until = deadline()
  for (;;) {
    for (const w of waiting.splice(0)) {
      const app = apps.get(w.machine.id)
      if (w.list.every((e) => met(app, e, store))) {
        const records = w.list.map((e) => {
          if (e.kind === 'page') return pageRecord(w.machine.id, e)
          const now = store.get(e.id)
          return applied.filter((a) => a.machine === w.machine.id && a.id === e.id && (now ? a.rev === now._rev : a.op === 'delete')).at(-1)
        })
        for (const [i, e] of w.list.entries()) {
          if (e.kind === 'page' && !w.heldOver) pagesSeen.push({machine: w.machine.id, path: e.path, via: records[i]?.via ?? 'render'})
        }
        const at = Math.max(...records.map((r) => r?.at ?? w.since))
        const byCatchUp = records.some((r) => r?.via === 'catch-up')
        const why = explain(w.machine.id)
        // A push that was lost (cut off, suspended, failed runs) and reconciliation made good.
        if (byCatchUp && (w.heldOver || why)) {
          const first = Math.min(...w.list.map((e) => e.at))
          const cause = w.heldOver ? 'away: cut off or suspended while the change was pushed' : `the Function's report: ${why}`
          caughtUp.push({machine: w.machine.id, region: w.machine.region, staleMs: at - first, at, cause})
        }
        if (!w.heldOver) fresh[w.machine.id] = at - started
      } else {
        waiting.push(w)
      }
    }
    if (waiting.length === 0 || Date.now() > until) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  // A run killed at its timeout leaves what it could not finish recorded on the Machines: those are checked again
  // after the next step's runs, which must finish it.
  const leftByKill = killed ? waiting.splice(0).filter((w) => !w.heldOver) : []
  for (const w of waiting.filter((w) => !w.heldOver)) {
    for (const e of w.list.filter((e) => e.kind === 'page')) {
      if (met(apps.get(w.machine.id), e, store)) pagesSeen.push({machine: w.machine.id, path: e.path, via: pageRecord(w.machine.id, e)?.via ?? 'render'})
    }
  }
  for (const w of leftByKill) pending.push({machine: w.machine, list: w.list.filter((e) => !met(apps.get(w.machine.id), e, store))})
  for (const w of waiting) {
    for (const e of w.list.filter((e) => !met(apps.get(w.machine.id), e, store))) {
      const expected = e.kind === 'page' ? `${e.path} showing ${JSON.stringify(freshPage(store, e.path, e.id))}` : store.get(e.id)?._rev ?? 'deleted'
      stale.push({machine: w.machine.id, region: w.machine.region, id: e.id, kind: e.kind, expected, why: explain(w.machine.id) ?? null})
    }
  }
  const dependentPages = expectations.filter((e) => e.kind === 'page')
  const times = Object.values(fresh).sort((a, b) => a - b)
  return {
    fresh,
    freshMachines: times.length,
    servingMachines: checked,
    untargeted,
    away: pending.filter((p) => !leftByKill.some((w) => w.machine.id === p.machine.id)).map((p) => p.machine.id),
    leftByKill: leftByKill.map((w) => w.machine.id),
    freshP50: times.length ? times[Math.floor((times.length - 1) / 2)] : null,
    freshMax: times.length ? times.at(-1) : null,
    caughtUp,
    maxStaleMs: caughtUp.length ? Math.max(...caughtUp.map((c) => c.staleMs)) : null,
    stale,
    // The pages that show a changed document through a reference: how many, and per Machine checked, fresh because
    // the push dropped them (`freshByPush`), or fresh otherwise (a reconciliation, or never rendered before).
    dependents: {
      pages: dependentPages.map((e) => e.path).sort(),
      checks: pagesSeen.length + stale.filter((st) => st.kind === 'page').length,
      freshByPush: pagesSeen.filter((p) => p.via === 'push').length,
      freshOtherwise: pagesSeen.filter((p) => p.via !== 'push').length,
      stale: stale.filter((st) => st.kind === 'page').length,
    },
  }
}

/** A lookup: why does some report say this Machine was not synced or restarted? (`undefined`: none says so) */
function explainer(reports) {
  const why = new Map()
  let wholeTarget
  for (const report of reports) {
    for (const target of report.targets ?? []) {
      if (target.error) wholeTarget = target.error.message
      for (const m of target.machines) {
        if (m.sync === 'failed') why.set(m.id, m.error?.message ?? 'sync failed')
        if (m.sync === 'skipped') why.set(m.id, m.reason ?? m.skipCode)
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
    id: report.change?.id ?? null,
    rev: report.change?.rev ?? null,
    resumable: report.resumable,
    startedAtMs: report.startedAtMs,
    durationMs: report.durationMs,
    targets: report.targets.map((t) => ({
      status: t.status,
      synced: t.machines.filter((m) => m.sync === 'synced').length,
      skipped: t.machines.filter((m) => m.sync === 'skipped').map((m) => ({id: m.id, code: m.skipCode})),
      failed: t.machines.filter((m) => m.sync === 'failed').map((m) => ({id: m.id, error: m.error?.message, class: m.error?.class})),
      restartsNotDone: t.machines
        .filter((m) => m.restart && !['restarted', 'would_restart'].includes(m.restart.outcome))
        .map((m) => ({id: m.id, outcome: m.restart.outcome, class: m.restart.error?.class ?? null, reason: m.restart.reason ?? m.restart.error?.message})),
      restart: t.restart ?? null,
      requests: t.requests,
      dependents: t.dependents
        ? {pushed: t.dependents.pushed, leftOut: t.dependents.leftOut ?? null, error: t.dependents.error?.message ?? null, notLookedUp: t.dependents.notLookedUp ?? null}
        : null,
      error: t.error?.message,
    })),
  }
}
