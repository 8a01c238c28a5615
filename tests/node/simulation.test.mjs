// The simulation's assertions on a small fleet: the editorial session through the real Function handler on the
// local Fly, without faults and with each fault profile. Every started Machine must end fresh after every event,
// or the Function's report must say exactly which Machine is not and why.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {runSimulation} from '../../local/simulation.mjs'

const scenario = JSON.parse(readFileSync(new URL('../../local/scenarios/editorial.json', import.meta.url), 'utf8'))
const run = (faults, steps = scenario.steps) => runSimulation({scenario: {...scenario, steps}, machines: 6, faults, restartTimeoutMs: 5_000})
const step = (result, label) => result.steps.find((s) => s.label.startsWith(label))

test('no faults: every started Machine is fresh after every event, deletes and renames included', async () => {
  const result = await run('none')
  assert.equal(result.ok, true)
  assert.equal(result.steps.length, scenario.steps.length)
  for (const s of result.steps) {
    assert.equal(s.stale.length, 0, `${s.label}: ${JSON.stringify(s.stale)}`)
    assert.equal(s.freshMachines, s.servingMachines, s.label)
    assert.ok(s.servingMachines > 0, s.label)
  }
  const rename = step(result, 'rename')
  assert.ok(rename.documents === 1 && rename.pushes === 6, 'one push per Machine')
  // Content-only events never restart and never take a Machine out of service.
  for (const s of result.steps.filter((s) => !s.label.startsWith('settings'))) {
    assert.equal(s.restarts, 0, s.label)
    assert.equal(s.availability, 1, s.label)
  }
  const settings = step(result, 'settings')
  assert.equal(settings.restarts, 6, 'the settings change rolls through every Machine')
  assert.ok(settings.availability >= 0.5, `at most 2 of 6 down at once: ${settings.availability}`)
  assert.equal(step(result, 'content release').invocations, 20)
  assert.equal(step(result, 'market').servingMachines, 2, 'the jp page goes to the nrt Machines only')
  const dup = step(result, 'duplicate')
  assert.ok(dup.reports.every((r) => r.ok), 'a duplicate delivery is a success')
})

test('flaky Machines API (429 with and without Retry-After, 5xx, ambiguous 408): still all fresh', async () => {
  const result = await run('flaky')
  assert.equal(result.ok, true)
  assert.equal(result.explainedStale, 0)
  assert.ok((result.faultsHit.list ?? 0) >= 3, JSON.stringify(result.faultsHit))
  assert.ok((result.faultsHit.restart ?? 0) >= 1, 'the ambiguous 408 was served')
  assert.equal(step(result, 'settings').restarts, 6, 'the Machine behind the 408 was restarted once, not twice')
})

test('a Machine that never comes back: the roll stops and the report says so', async () => {
  const result = await run('stuck-restart')
  assert.equal(result.ok, true)
  const settings = step(result, 'settings')
  const restarts = settings.reports.flatMap((r) => r.targets.map((t) => t.restart))
  assert.ok(restarts.some((r) => r && r.restarted < r.planned && /failed to restart/.test(r.stoppedEarly ?? '')), JSON.stringify(restarts))
  assert.ok(settings.reports.every((r) => !r.ok), 'the run is reported as not ok')
})

test('an unreachable Machine: stale, and every stale read is explained by the report', async () => {
  // Two events keep it quick: each push to the lost Machine is retried for ~8 s before the run gives up on it.
  const result = await run('unreachable', scenario.steps.filter((s) => /^(create|settings)/.test(s.label)))
  assert.equal(result.ok, true, 'no unexplained staleness')
  const stale = result.steps.flatMap((s) => s.stale)
  assert.ok(stale.length > 0)
  assert.equal(new Set(stale.map((s) => s.machine)).size, 1, 'only the unreachable Machine')
  assert.ok(stale.every((s) => s.why), 'each one explained')
})
