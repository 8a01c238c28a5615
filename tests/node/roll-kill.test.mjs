// A roll killed at any instant, on the local Fly, through the real Function handler: the handler runs a
// restart-type change in a child process, which is SIGKILLed (as Sanity ends a run at its timeout: no cleanup)
// right after the emulator answers the n-th request of a kind — list, mark, lease, restart, wait, poll, release.
// Then the next run (a retry of the change, or the next event of another type) runs to its end in a new child.
//
// Checked from the local Fly's own records only (its lease log, request log, Machine timelines, restart counts and
// metadata), never from what the engine reports about itself:
// - every Machine restarted exactly once for the change, back started with passing checks, its mark done;
// - no lease of ours held past its TTL: the killed run's leases free themselves within ~15 s of the kill, every
//   lease the next run took was released by the run itself, and the next run waited out a stale lease instead
//   of fighting it (one refused request at most, no restart sent against it);
// - never more Machines down at once than the rule allows: 2 in all, at most a region's cap in each region
//   (2 of 3, 1 of 2), and a region's only Machine only while nothing else is down.
//
// Each kill point has its own emulator and fleet, so a failure names its point; the points run concurrently
// (each mostly waits: on restarts and on the killed run's leases to expire).
import {describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {startFleet} from '../../local/fly/fleet.mjs'
import {DEFAULT_TOKEN} from '../../local/fly/machines-api.mjs'
import {isDown, LOOPBACK_SLACK_MS} from './support/fly-records.mjs'
import {childEnv, killGroup, ROOT} from './support/run.mjs'

const SECRET = 'roll-kill-sync-secret-0123456789'
const MAX_UNAVAILABLE = 2
/** Three regions of 3, 2 and 1 Machines: each region rule is in play. */
const LAYOUT = ['ord', 'ord', 'ord', 'fra', 'fra', 'nrt']
/** What the issue allows a killed run's lease to outlive it: "a killed run frees its Machines within ~15 s". */
const LEASE_FREED_WITHIN_MS = 15_000
/** A run that does not end by then is a hang (the budget is 40 s). */
const RUN_LIMIT_MS = 50_000

// The real handler (function.ts over the wasm core), one run per process, as a Function run is. The event and
// the module come in through variables the core does not read (neither FLY_* nor SANITY_*).
const CHILD = `
const {handler} = await import(process.env.ROLL_KILL_HANDLER)
const data = JSON.parse(process.env.ROLL_KILL_EVENT)
let report
try {
  report = await handler({context: {local: true, clientOptions: {projectId: 'rollkill', dataset: 'production'}}, event: {data}})
} catch (error) {
  report = error?.report ?? {error: String(error?.message ?? error)}
  process.exitCode = 1
}
process.stdout.write('\\nROLL-KILL-REPORT ' + JSON.stringify(report) + '\\n')
`

/**
 * The kill points: right after the emulator answers the `nth` request of `action` (its effect done, the answer
 * perhaps never read). `next`: what runs next — the same change again (`retry`), or a change of another type
 * that only learns of the roll from the Machines (`other`; only once a mark is written).
 */
const POINTS = [
  {action: 'list', nth: 1, next: 'retry'},
  {action: 'metadata_set', nth: 1, next: 'other'},
  {action: 'metadata_set', nth: LAYOUT.length, next: 'retry'},
  {action: 'lease', nth: 1, next: 'other'},
  {action: 'lease', nth: 3, next: 'retry'},
  {action: 'restart', nth: 1, next: 'other'},
  {action: 'restart', nth: 2, next: 'retry'},
  {action: 'restart', nth: 4, next: 'other'},
  {action: 'wait', nth: 1, next: 'retry'},
  {action: 'wait', nth: 3, next: 'other'},
  {action: 'get', nth: 2, next: 'retry'},
  {action: 'release', nth: 1, next: 'other'},
  {action: 'release', nth: 3, next: 'retry'},
  {action: 'restart', nth: LAYOUT.length, next: 'retry'},
  {action: 'release', nth: LAYOUT.length - 1, next: 'other'},
]

/** Acknowledges every push with its own Machine id. */
const receiver = (machine) => async () => Response.json({protocol: 'sanity-fly-sync/1', machine: machine.env.FLY_MACHINE_ID, status: 'applied', restart: null})

function configFor(fleet) {
  return {
    version: 1,
    targets: [
      {
        name: 'web',
        app: fleet.app,
        machinesApiUrl: fleet.api.url,
        appUrl: fleet.url,
        types: ['siteSettings', 'page'],
        routes: {page: ['/{slug}'], siteSettings: ['/settings']},
        restart: {types: ['siteSettings']},
        maxUnavailable: MAX_UNAVAILABLE,
        restartTimeoutMs: 10_000,
        dependents: false,
      },
    ],
  }
}

/** Start one run of the handler for `data`; `{child, exited}` (exited: `{code, signal, output}`). */
function startRun(fleet, data) {
  const env = childEnv({
    FLY_SYNC_CONFIG: JSON.stringify(configFor(fleet)),
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SECRET,
    FLY_SYNC_BUDGET_MS: '40000',
    FLY_SYNC_REQUEST_TIMEOUT_MS: '5000',
    ROLL_KILL_HANDLER: pathToFileURL(join(ROOT, 'function.ts')).href,
    ROLL_KILL_EVENT: JSON.stringify(data),
  })
  const child = spawn(process.execPath, ['--input-type=module', '-e', CHILD], {cwd: ROOT, env, detached: true, stdio: ['ignore', 'pipe', 'pipe']})
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (c) => (output += c))
  child.stderr.setEncoding('utf8').on('data', (c) => (output += c))
  const limit = setTimeout(() => killGroup(child, 'SIGKILL'), RUN_LIMIT_MS)
  const exited = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(limit)
      resolve({code, signal, output})
    }),
  )
  return {child, exited}
}

const reportOf = (output) => {
  const line = output.split('\n').find((l) => l.startsWith('ROLL-KILL-REPORT '))
  return line ? JSON.parse(line.slice('ROLL-KILL-REPORT '.length)) : null
}

/** The most a region of `size` Machines may have down at once (at least one; never the whole of a larger region). */
const regionCap = (size) => Math.max(1, Math.min(MAX_UNAVAILABLE, size - 1))

/**
 * Replay the emulator's state log (its own order) and return every instant the rule was broken: more than
 * MAX_UNAVAILABLE down, more than a region's cap down in it, or a lone region's Machine down with another.
 */
function downRuleBreaks(stateLog, machines) {
  const sizes = {}
  for (const m of machines) sizes[m.region] = (sizes[m.region] ?? 0) + 1
  const down = new Map()
  const breaks = []
  let most = 0
  for (const e of [...stateLog].sort((a, b) => a.seq - b.seq)) {
    if (isDown(e)) down.set(e.machine, e)
    else down.delete(e.machine)
    most = Math.max(most, down.size)
    const perRegion = {}
    for (const {region: r} of down.values()) perRegion[r] = (perRegion[r] ?? 0) + 1
    const why = []
    if (down.size > MAX_UNAVAILABLE) why.push(`${down.size} down`)
    for (const [r, n] of Object.entries(perRegion)) {
      if (n > regionCap(sizes[r])) why.push(`${n} of ${sizes[r]} down in ${r}`)
      if (sizes[r] === 1 && down.size > 1) why.push(`${r}'s only Machine down with ${down.size - 1} other(s)`)
    }
    const who = [...down.values()].map((d) => `${d.machine} ${d.region} ${d.state}/${d.checks} since seq ${d.seq} (${d.cause})`)
    if (why.length) breaks.push(`seq ${e.seq}: ${why.join(', ')}: ${who.join('; ')}`)
  }
  return {breaks, most}
}

async function killAndFinish(point, index) {
  const fleet = await startFleet({
    machines: LAYOUT.map((region) => ({region})),
    regions: [...new Set(LAYOUT)],
    latencyMs: {ord: 1, fra: 2, nrt: 3},
    handlerFor: receiver,
    apiOptions: {seed: 100 + index, timings: {stopMs: [150, 250], startMs: [250, 400], checksCriticalMs: 200}},
  })
  const api = fleet.api
  try {
    // The change: after every Machine's boot (an hour ago), so each owes a restart for it.
    const rev = `rk${index}`
    const settings = {_id: 'siteSettings', _type: 'siteSettings', _rev: rev, _updatedAt: new Date().toISOString(), title: `Roll ${index}`}
    const page = {_id: 'page-home', _type: 'page', _rev: `p${index}`, _updatedAt: new Date().toISOString(), title: 'Home', slug: {_type: 'slug', current: 'home'}}

    // The run, killed right after the emulator answers the point's request.
    const first = startRun(fleet, settings)
    let seen = 0
    let killedAt = null
    const onRequest = (entry) => {
      if (entry.action !== point.action || killedAt !== null) return
      seen += 1
      if (seen < point.nth) return
      killedAt = api.clock.now()
      killGroup(first.child, 'SIGKILL')
    }
    api.events.on('request', onRequest)
    const ended = await first.exited
    api.events.off('request', onRequest)
    assert.ok(killedAt !== null, `the run ended before its ${point.nth}th ${point.action} (saw ${seen}): ${ended.output.slice(-2000)}`)
    assert.equal(ended.signal, 'SIGKILL', 'killed, not ended')
    const killedRunLeases = api.leases('web').filter((l) => l.source === 'api')

    // The next run, to its end.
    const secondStart = api.clock.now()
    const second = startRun(fleet, point.next === 'retry' ? settings : page)
    const done = await second.exited
    const secondEnd = api.clock.now()
    const report = reportOf(done.output)
    assert.equal(done.code, 0, `the next run succeeded: ${done.output.slice(-3000)}`)
    assert.ok(report?.ok && report.resumable === 0, JSON.stringify(report))

    // Leases, from the emulator's lease log, read as the run ended (before any TTL of the next run's could pass).
    const leases = api.leases('web').filter((l) => l.source === 'api')
    const ttl = (l) => l.expiresAt - (l.refreshedAt ?? l.acquiredAt)
    for (const l of leases) assert.ok(ttl(l) <= LEASE_FREED_WITHIN_MS, `${l.machine}: a lease of ${ttl(l)} ms asked for`)
    const stale = []
    for (const k of killedRunLeases) {
      const l = leases.find((x) => x.machine === k.machine && x.acquiredAt === k.acquiredAt)
      assert.ok(l.releasedAt !== null || l.expiresAt <= killedAt + LEASE_FREED_WITHIN_MS, `${l.machine}: the killed run's lease held ${l.expiresAt - killedAt} ms past the kill`)
      assert.ok(l.refreshedAt === null || l.refreshedAt <= killedAt + LOOPBACK_SLACK_MS, `${l.machine}: the killed run's lease refreshed after the kill`)
      if (l.releasedAt === null && l.expiresAt > secondStart) stale.push(l)
    }
    const ours = leases.filter((l) => l.acquiredAt >= secondStart)
    for (const l of ours) assert.equal(l.end, 'released', `${l.machine}: the next run's lease ${l.end}, not released by the run (acquired ${l.acquiredAt - secondStart} ms in)`)
    // Not fought: against a stale lease, the next run asked once (refused), then took it only once it expired.
    const during = api.log.filter((r) => r.at >= secondStart && r.at <= secondEnd)
    for (const s of stale) {
      const refused = during.filter((r) => r.machine === s.machine && r.status === 409)
      assert.ok(refused.length <= 1 && refused.every((r) => r.action === 'lease'), `${s.machine}: against the stale lease: ${JSON.stringify(refused.map((r) => [r.action, r.at - s.expiresAt]))}`)
      for (const l of ours.filter((x) => x.machine === s.machine)) assert.ok(l.acquiredAt >= s.expiresAt, `${s.machine}: leased before the stale lease expired`)
    }
    assert.deepEqual(during.filter((r) => r.status === 409 && r.action !== 'lease').map((r) => [r.action, r.machine]), [], 'no call refused for a lease')

    // Every Machine restarted exactly once for the change, back up, its mark done (the emulator's records).
    for (const m of api.machines('web')) {
      const restarts = api.timeline(m.id).filter((e) => e.state === 'stopping' && e.cause === 'restart').length
      assert.equal(m.counts.restarts, 1, `${m.id} (${m.region}) restarted exactly once, not ${m.counts.restarts}`)
      assert.equal(restarts, 1, `${m.id}: one restart in its timeline`)
      assert.equal(m.state, 'started')
      assert.equal(m.checks, 'passing')
      assert.match(m.metadata.sanity_fly_sync_restart ?? '', new RegExp(`^1;done;siteSettings@${rev}(;\\d+)?$`), `${m.id}: its mark says done for the change`)
      // A lease still held now can only be the killed run's, inside its TTL (checked above against the kill).
      if (m.lease) assert.ok(killedRunLeases.some((k) => k.machine === m.id && k.expiresAt === m.lease.expiresAtMs), `${m.id}: a lease held that the killed run did not leave: ${JSON.stringify(m.lease)}`)
    }

    // Never more down than the rule allows, over both runs, by the emulator's own timeline.
    const {breaks, most} = downRuleBreaks(api.stateLog, api.machines('web'))
    assert.deepEqual(breaks, [], 'Machines down beyond the rule')
    assert.ok(most >= 1)
    return {stale: stale.length}
  } finally {
    await fleet.close()
  }
}

describe('a roll killed at any instant is finished by the next run, exactly once (the local Fly)', {concurrency: true}, () => {
  for (const [index, point] of POINTS.entries()) {
    test(`killed after ${point.action} #${point.nth}, then ${point.next === 'retry' ? 'a retry of the change' : 'a change of another type'}`, {timeout: 120_000}, () => killAndFinish(point, index))
  }
})
