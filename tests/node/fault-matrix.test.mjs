// The fault matrix on the local Fly, through the real Function handler: for each fault, the invariants hold —
// no lost update (every started Machine ends on the newest revision, or the report says which did not and why),
// never more than max_unavailable Machines down at once, no request past the time budget, and every failure in
// the report classified. (429s, 5xx, ambiguous 408s, unreachable Machines and a failed run are in
// simulation.test.mjs; this file adds timeouts, a lease held elsewhere and a budget that runs out.)
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {runSimulation} from '../../local/simulation.mjs'

const scenario = JSON.parse(readFileSync(new URL('../../local/scenarios/editorial.json', import.meta.url), 'utf8'))
const steps = scenario.steps.filter((s) => /^(create|edit title|settings)/.test(s.label))
const MAX_UNAVAILABLE = 2 // local/simulation.mjs configures the target so
const CLASSES = new Set(['bad_input', 'retryable', 'fatal'])

/** The most Machines not `started` at once, over the emulator's timelines, after the first boot. */
function maxDown(result) {
  const events = []
  for (const [id, timeline] of Object.entries(result.timelines)) {
    for (const e of timeline) if (e.at >= result.steps[0].startedAt) events.push({at: e.at, id, down: e.state !== 'started'})
  }
  events.sort((a, b) => a.at - b.at)
  const down = new Set()
  let most = 0
  for (const e of events) {
    if (e.down) down.add(e.id)
    else down.delete(e.id)
    most = Math.max(most, down.size)
  }
  return most
}

function invariants(result, {budgetMs}) {
  assert.equal(result.ok, true, JSON.stringify(result.steps.map((s) => [s.label, s.stale])))
  assert.ok(maxDown(result) <= MAX_UNAVAILABLE, `at most ${MAX_UNAVAILABLE} down, saw ${maxDown(result)}`)
  for (const s of result.steps) {
    // No Machines API request past the budget of the runs of this step.
    const late = result.apiLog.filter((r) => r.at >= s.startedAt && r.at <= s.startedAt + s.durationMs && r.at > s.startedAt + budgetMs + 250)
    assert.deepEqual(late, [], `${s.label}: requests past the ${budgetMs} ms budget`)
    for (const report of s.reports) {
      for (const t of report.targets) {
        for (const f of t.failed) assert.ok(f.error, `${s.label}: a failed Machine has an error`)
        if (t.error) assert.ok(t.error.length > 0)
      }
    }
    for (const st of s.stale) assert.ok(st.why, `${s.label}: ${st.machine} stale without a reason`)
  }
}

/** Every failure in the reports carries a class (or, for a restart not attempted, the reason); their number. */
function classified(result) {
  let failures = 0
  for (const s of result.steps) {
    for (const r of s.reports) {
      for (const t of r.targets) {
        for (const f of t.failed) {
          assert.ok(CLASSES.has(f.class), `${s.label}: ${f.id} failed without a class`)
          failures += 1
        }
        for (const x of t.restartsNotDone) {
          if (x.outcome === 'failed') assert.ok(CLASSES.has(x.class), `${s.label}: ${x.id} restart failed without a class`)
          else assert.ok(x.reason, `${s.label}: ${x.id} not restarted without a reason`)
          failures += 1
        }
      }
    }
  }
  return failures
}

test('timeouts: a Machine list that never answers, and a restart whose answer is lost although it happened', async () => {
  const budgetMs = 60_000
  const result = await runSimulation({scenario: {...scenario, steps}, machines: 4, faults: 'timeouts', budgetMs, restartTimeoutMs: 5_000})
  invariants(result, {budgetMs})
  assert.equal(result.faultsHit.list, 1)
  assert.equal(result.faultsHit.restart, 1)
  const settings = result.steps.find((s) => s.label.startsWith('settings'))
  assert.equal(settings.restarts, 4, 'the restart behind the lost answer was not sent twice (one per Machine)')
  assert.ok(settings.reports.every((r) => r.ok))
})

test('a lease held elsewhere: no restart is fought for, and the report says which Machine and why', async () => {
  const budgetMs = 60_000
  const result = await runSimulation({scenario: {...scenario, steps}, machines: 4, faults: 'lease-held', budgetMs, restartTimeoutMs: 5_000})
  invariants(result, {budgetMs})
  const settings = result.steps.find((s) => s.label.startsWith('settings'))
  assert.equal(settings.restarts, 0)
  const restart = settings.reports[0].targets[0].restart
  assert.match(restart.stoppedEarly, /could not lease/)
  assert.ok(settings.stale.length > 0 && settings.stale.every((st) => /lease/.test(st.why)), JSON.stringify(settings.stale))
  assert.ok(classified(result) > 0)
})

test('the time budget runs out during a roll: it stops inside the budget, releases its leases, says what was left', async () => {
  const budgetMs = 6_000
  const result = await runSimulation({scenario: {...scenario, steps}, machines: 4, faults: 'stuck-restart', budgetMs, restartTimeoutMs: 30_000})
  invariants(result, {budgetMs})
  const settings = result.steps.find((s) => s.label.startsWith('settings'))
  const report = settings.reports[0]
  assert.equal(report.ok, false)
  assert.ok(report.durationMs <= budgetMs, `the run ended inside its budget: ${report.durationMs} ms`)
  const restart = report.targets[0].restart
  assert.ok(restart.restarted < restart.planned)
  assert.deepEqual(restart.unreleasedLeases, [], 'leases released before the end')
  assert.ok(classified(result) > 0)
})
