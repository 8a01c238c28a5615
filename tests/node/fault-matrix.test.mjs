// The fault matrix on the local Fly, through the real Function handler: for each fault, the invariants hold —
// no lost update (every started Machine ends on the newest revision, or the report says which did not and why),
// never more than max_unavailable Machines down at once, no request past the time budget, no lease left behind,
// and every failure in the report classified. (429s, 5xx, ambiguous 408s, unreachable Machines and a failed run
// are in simulation.test.mjs; this file adds timeouts, a lease held elsewhere and a budget that runs out.)
//
// The invariants are read from the local Fly's own records (its state log, request log and lease log:
// tests/node/support/fly-records.mjs), not from what the engine reports about itself; where the report makes a
// claim (restarted, not attempted, leases released) it is checked against those records.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {runSimulation} from '../../local/simulation.mjs'
import {leasesLeftBehind, mostDownAtOnce, requestsPastBudget, restartsSeen, runWindows} from './support/fly-records.mjs'

const scenario = JSON.parse(readFileSync(new URL('../../local/scenarios/editorial.json', import.meta.url), 'utf8'))
const steps = scenario.steps.filter((s) => /^(create|edit title|settings \(needs restart\))/.test(s.label))
const MAX_UNAVAILABLE = 2 // local/simulation.mjs configures the target so
const CLASSES = new Set(['bad_input', 'retryable', 'fatal'])

function invariants(result, {budgetMs}) {
  assert.equal(result.ok, true, JSON.stringify(result.steps.map((s) => [s.label, s.stale])))
  for (const s of result.steps) for (const st of s.stale) assert.ok(st.why, `${s.label}: ${st.machine} stale without a reason`)

  // Machines down over time, from the emulator's timelines (down = not started, or checks not passing).
  const down = mostDownAtOnce(result.timelines, {from: result.steps[0].startedAt, to: result.endedAt})
  assert.ok(down.most <= MAX_UNAVAILABLE, `at most ${MAX_UNAVAILABLE} Machines down at once; the emulator saw ${down.most} (${down.machines.join(', ')}) at ${down.at}`)

  // Requests past the budget, from the emulator's request log against each run's own start. A step runs its
  // Function once, plus any resume run a run handed an unfinished roll to.
  const runs = runWindows(result, budgetMs)
  const continuations = result.steps.reduce((n, s) => n + s.continuations, 0)
  assert.equal(runs.length, steps.length + continuations, 'one run per step, and one per continuation')
  const budget = requestsPastBudget(result.apiLog, runs)
  assert.deepEqual(budget.late, [], `Machines API requests past the ${budgetMs} ms budget`)
  assert.equal(budget.checked, result.apiLog.length, 'every request was checked against its run')
  assert.ok(budget.checked > 0)

  // Leases left behind, from the emulator's lease log: every lease the runs took was released by a DELETE.
  const leases = leasesLeftBehind(result.leases)
  assert.deepEqual(leases.leftBehind, [], 'leases held at the end or left to expire by their TTL')

  // The faults here are on the Machines API, never on pushes: no sync may fail, and no target may fail whole.
  for (const s of result.steps) {
    for (const report of s.reports) {
      for (const t of report.targets) {
        assert.deepEqual(t.failed, [], `${s.label}: pushes failed`)
        assert.equal(t.error, undefined, `${s.label}: the target failed whole`)
      }
    }
  }
  return {down, budget, leases}
}

/**
 * The report's restart claims against the emulator's timelines (`seen`, restarts per Machine during the run):
 * every restart not done carries a class (failed) or a reason (not attempted); a Machine reported not attempted
 * was not restarted; no Machine was restarted twice; the Machines the report counts as restarted are exactly
 * those the emulator saw restarted and back up. Returns the restarts not done.
 */
function restartClaims(report, seen) {
  const [target] = report.targets
  const notDone = target.restartsNotDone
  for (const x of notDone) {
    if (x.outcome === 'failed') assert.ok(CLASSES.has(x.class), `${x.id}: restart failed without a class: ${JSON.stringify(x)}`)
    else assert.ok(typeof x.reason === 'string' && x.reason.length > 0, `${x.id}: not restarted without a reason`)
    if (x.outcome === 'not_attempted') assert.equal(seen[x.id].restarts, 0, `${x.id}: reported not attempted, restarted on the emulator`)
  }
  assert.ok(Object.values(seen).every((s) => s.restarts <= 1), `a Machine restarted twice: ${JSON.stringify(seen)}`)
  const backUp = Object.entries(seen).filter(([, s]) => s.restarts === 1 && s.upAtEnd).map(([id]) => id)
  assert.equal(backUp.length, target.restart?.restarted ?? 0, `restarted and back up on the emulator: ${backUp.join(', ')}`)
  for (const id of backUp) assert.ok(!notDone.some((x) => x.id === id), `${id}: back up on the emulator, reported not restarted`)
  return notDone
}

/** The settings runs (the run, then any resume runs), each with the restarts the emulator saw during it. */
function settingsRuns(result) {
  const step = result.steps.find((s) => s.label.startsWith('settings'))
  assert.equal(step.reports.length, 1 + step.continuations)
  const runs = step.reports.map((report) => ({report, seen: restartsSeen(result.timelines, {from: report.startedAtMs, to: report.startedAtMs + report.durationMs})}))
  return {step, runs}
}

function settingsRun(result) {
  const {step, runs} = settingsRuns(result)
  assert.equal(runs.length, 1, 'no continuation')
  return {step, ...runs[0]}
}

test('timeouts: a Machine list that never answers, and a restart whose answer is lost although it happened', async () => {
  const budgetMs = 60_000
  const result = await runSimulation({scenario: {...scenario, steps}, machines: 4, faults: 'timeouts', budgetMs, restartTimeoutMs: 5_000})
  const {leases} = invariants(result, {budgetMs})
  assert.equal(result.faultsHit.list, 1)
  assert.equal(result.faultsHit.restart, 1)
  // The hung requests were given up by the client (no answer written, the connection closed) — inside the budget.
  const hung = result.apiLog.filter((r) => r.status === null)
  assert.deepEqual(hung.map((r) => r.action).sort(), ['list', 'restart'])
  assert.ok(hung.every((r) => r.endedAt !== null), 'every hung request was closed by the client')

  const {step, report, seen} = settingsRun(result)
  assert.ok(report.ok, JSON.stringify(report))
  assert.equal(step.restarts, 4, 'the restart behind the lost answer was not sent twice (one per Machine)')
  // The emulator: each Machine restarted exactly once and was back started with passing checks.
  assert.deepEqual(Object.values(seen), Array(4).fill({restarts: 1, upAtEnd: true}), JSON.stringify(seen))
  assert.equal(report.targets[0].restart.restarted, 4)
  assert.deepEqual(restartClaims(report, seen), [])
  // The roll leased every Machine and released every lease, the one behind the lost answer included.
  assert.equal(leases.taken, 4, JSON.stringify(result.leases))
  assert.deepEqual(new Set(result.leases.map((l) => l.machine)).size, 4)
})

test('a lease held elsewhere: no restart is fought for, and the report says which Machine and why', async () => {
  const budgetMs = 60_000
  const result = await runSimulation({scenario: {...scenario, steps}, machines: 4, faults: 'lease-held', budgetMs, restartTimeoutMs: 5_000})
  const {leases} = invariants(result, {budgetMs})
  const {step, report, seen} = settingsRun(result)

  // The emulator: the other owner's lease is untouched — still held at the end, never released, and we never
  // held that Machine, which was not restarted.
  const theirs = result.leases.filter((l) => l.source === 'fault')
  assert.equal(theirs.length, 1)
  const [held] = theirs
  assert.equal(held.end, 'held', JSON.stringify(held))
  assert.equal(held.releasedAt, null)
  assert.ok(!result.leases.some((l) => l.source === 'api' && l.machine === held.machine), 'no lease of ours on the Machine held elsewhere')
  assert.equal(seen[held.machine].restarts, 0, JSON.stringify(seen))
  // Machines are leased one turn at a time: those leased before the roll met the other lease were restarted
  // once (and released); once it met it, the roll stopped — no Machine we did not lease was restarted.
  const ours = new Set(result.leases.filter((l) => l.source === 'api').map((l) => l.machine))
  for (const [id, s] of Object.entries(seen)) assert.equal(s.restarts, ours.has(id) ? 1 : 0, `${id}: ${JSON.stringify(seen)}`)
  assert.ok(ours.size <= 3 && leases.taken === ours.size, `at most the three free Machines leased, once each: ${leases.taken}`)
  assert.equal(step.restarts, ours.size)

  // The report names that Machine and the reason, and every Machine it did not restart has one.
  const restart = report.targets[0].restart
  assert.match(restart.stoppedEarly, new RegExp(`could not lease ${held.machine}`))
  const notDone = restartClaims(report, seen)
  assert.deepEqual(notDone.map((x) => x.id).sort(), Object.keys(seen).filter((id) => !ours.has(id)).sort(), 'every Machine not restarted, each with a reason')
  assert.match(notDone.find((x) => x.id === held.machine).reason, /lease held elsewhere/)
  assert.ok(step.stale.length > 0 && step.stale.every((st) => /lease/.test(st.why)), JSON.stringify(step.stale))
})

test('the time budget runs out during a roll: each run stops inside its budget, releases its leases, says what was left', async () => {
  // Room for the first restart (a roll budgets 10 s for one before it has seen any), not for the stuck one.
  const budgetMs = 15_000
  const result = await runSimulation({scenario: {...scenario, steps}, machines: 4, faults: 'stuck-restart', budgetMs, restartTimeoutMs: 30_000})
  const {leases} = invariants(result, {budgetMs})
  const {runs} = settingsRuns(result)
  assert.ok(leases.taken > 0, 'the roll took leases (the emulator)')
  for (const {report, seen} of runs) {
    assert.ok(report.durationMs <= budgetMs, `each run ended inside its budget: ${report.durationMs} ms`)
    assert.deepEqual(report.targets[0].restart.unreleasedLeases, [], 'leases released before the end (the report)')
    restartClaims(report, seen)
  }
  // The stuck Machine (restarted, never back) is the emulator's; across the runs it was restarted once, never twice.
  const all = restartsSeen(result.timelines, {from: runs[0].report.startedAtMs, to: result.endedAt})
  const stuck = Object.entries(all).filter(([, s]) => !s.upAtEnd).map(([id]) => id)
  assert.equal(stuck.length, 1, `one Machine stuck: ${JSON.stringify(all)}`)
  assert.equal(all[stuck[0]].restarts, 1)
  // The first run ran out of budget before the restart timeout: the stuck Machine is left for later, recorded
  // (resumable, handed on); a resume run that can only watch it does not hand on again.
  const [first, ...later] = runs.map((r) => r.report)
  const outcomeOf = (report) => report.targets[0].restartsNotDone.find((x) => x.id === stuck[0])?.outcome
  assert.equal(outcomeOf(first), 'resumable', JSON.stringify(first.targets[0].restartsNotDone))
  assert.ok(first.resumable >= 1)
  assert.ok(later.length >= 1, 'the first run handed the rest on')
  assert.ok(later.every((r) => ['deferred', 'resumable'].includes(outcomeOf(r))), JSON.stringify(later.map(outcomeOf)))
  assert.ok(!later.at(-1).resumeWith || later.at(-1).resumable > 0)
})
