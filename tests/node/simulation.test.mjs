// The simulation's assertions on a small fleet: the editorial session, Content Lake edits through @sanity/client,
// events from the repo blueprint, the real Function handler, the local Fly, and reconciliation in every receiver.
// Every started Machine must be fresh after every event — by push, or caught up within one reconciliation
// interval plus one query when the push was lost.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {runSimulation} from '../../local/simulation.mjs'

const scenario = JSON.parse(readFileSync(new URL('../../local/scenarios/editorial.json', import.meta.url), 'utf8'))
const run = (faults, steps = scenario.steps) => runSimulation({scenario: {...scenario, steps}, machines: 6, faults, restartTimeoutMs: 5_000})
const step = (result, label) => result.steps.find((s) => s.label.startsWith(label))
const short = scenario.steps.filter((s) => /^(create|settings)/.test(s.label))
const bound = (scenario.catchUpSeconds ?? 2) * 1000 + 3000

test('the editorial session: fresh by push after every event; lost pushes caught up by reconciliation', async () => {
  const result = await run('none')
  assert.equal(result.ok, true, JSON.stringify(result.steps.filter((s) => !s.ok).map((s) => [s.label, s.stale])))
  assert.equal(result.steps.length, scenario.steps.length)
  for (const s of result.steps) assert.equal(s.stale.length, 0, s.label)
  // Every log line and report, scanned for the Fly token and the secrets: none appears.
  assert.ok(result.steps.reduce((n, s) => n + s.logLines, 0) > 100, 'there were logs to scan')
  for (const s of result.steps) assert.equal(s.leaks, 0, s.label)

  // The plain editorial part: every Machine fresh by push, nothing caught up, content never restarts anything.
  // (The run killed at its timeout and the run after it are checked below.)
  const plain = result.steps.slice(0, 11).filter((s) => !/killed|finishes the roll/.test(s.label))
  assert.equal(plain.length, 9)
  for (const s of plain) {
    assert.equal(s.freshMachines, s.servingMachines, s.label)
    assert.ok(s.servingMachines > 0, s.label)
    // Fresh because the Function pushed (reconciliation would mask a blueprint that sends nothing).
    assert.ok(s.invocations > 0 && s.pushes >= s.servingMachines, `${s.label}: ${s.invocations} runs, ${s.pushes} pushes`)
    assert.equal(s.caughtUp.length, 0, `${s.label}: ${JSON.stringify(s.caughtUp)}`)
    if (!s.label.startsWith('settings')) assert.equal(s.restarts, 0, s.label)
    if (!s.label.startsWith('settings')) assert.equal(s.availability, 1, s.label)
  }
  assert.equal(step(result, 'rename').pushes, 6, 'one push per Machine')
  assert.equal(step(result, 'content release').invocations, 20)
  const settings = step(result, 'settings')
  assert.equal(settings.restarts, 6, 'the settings change rolls through every Machine')
  assert.ok(settings.availability >= 0.5, `at most 2 of 6 down at once: ${settings.availability}`)
  assert.equal(step(result, 'market').servingMachines, 2, 'the jp page goes to the nrt Machines only')

  // Pages that show an edited document through a reference: read on every Machine before the edit (so each held
  // them rendered with the old author), they show the new name after it, each dropped by the push (its dependents'
  // routes), not by reconciliation. The draft that names the same author is no dependent.
  const author = step(result, 'edit author')
  assert.deepEqual(author.dependents.pages, ['/blog/post-a1', '/blog/post-a2', '/blog/post-a3'])
  assert.equal(author.warmed.reads, 3 * 6, 'every Machine rendered the three pages before the edit')
  assert.equal(author.dependents.checks, 3 * 6)
  assert.equal(author.dependents.freshByPush, 3 * 6, JSON.stringify(author.dependents))
  assert.equal(author.freshMachines, 6)
  assert.equal(author.caughtUp.length, 0)
  assert.deepEqual(author.reports.map((r) => [...r.targets[0].dependents.pushed].sort()), [['article-a1', 'article-a2', 'article-a3']])
  assert.equal(author.pushes, 6, 'one push per Machine carries the author and its three posts')
  // A deleted category: the two posts that showed it drop it on every Machine (the third post is in another one).
  const category = step(result, 'delete category')
  assert.deepEqual(category.dependents.pages, ['/blog/post-a1', '/blog/post-a2'])
  assert.equal(category.dependents.freshByPush, 2 * 6, JSON.stringify(category.dependents))
  assert.equal(category.stale.length, 0)
  assert.deepEqual(category.reports.map((r) => [...r.targets[0].dependents.pushed].sort()), [['article-a1', 'article-a2']])
  // Sync tags: the author's edit invalidated the tags of the live pages that showed that author. The sync-tag
  // Function pushed them to every Machine, each dropped the live page cached under them and served the new name;
  // `done` was called once, with the tags, after the last Machine answered.
  const tagged = step(result, 'sync tags: edit an author')
  assert.equal(tagged.syncTagRuns.length, 1, 'one announcement for one commit')
  const [tagRun] = tagged.syncTagRuns
  assert.equal(tagRun.answers, 6, 'every Machine answered the tags push')
  assert.equal(tagRun.doneCalls, 1)
  assert.equal(tagRun.doneTags.length, tagRun.tags)
  assert.ok(tagRun.doneAt > tagRun.lastAnswerAt, `done at ${tagRun.doneAt}, last answer at ${tagRun.lastAnswerAt}`)
  assert.equal(tagRun.error, null)
  assert.equal(tagged.live.checks, 3 * 6, 'three live pages read on every Machine before the edit')
  assert.equal(tagged.live.freshByTags, 6, 'the one page showing the author, on every Machine')
  assert.equal(tagged.live.unchanged, 2 * 6)
  assert.equal(tagged.live.droppedUnchanged, 0, 'the tags named only what showed the author')
  assert.deepEqual(tagged.live.stale, [])
  // One Machine unreachable: the others got the tags, done was still called once (after the run gave up on it),
  // the report names the Machine, and its live page is stale with that reason.
  const unreachable = step(result, 'sync tags, fra#0 unreachable')
  const [cut] = unreachable.syncTagRuns
  assert.equal(cut.answers, 5)
  assert.equal(cut.doneCalls, 1)
  assert.ok(cut.doneAt > cut.lastAnswerAt)
  assert.match(cut.error, /partial/)
  const tagReport = unreachable.reports.find((r) => r.id === null)
  assert.equal(tagReport.targets[0].failed.length, 1)
  const [lost] = tagReport.targets[0].failed
  assert.match(lost.error, /could not reach machine/)
  assert.equal(unreachable.live.freshByTags, 5)
  assert.deepEqual(unreachable.live.stale.map((st) => [st.machine, st.path]), [[lost.id, "/live/blog/post-g1"]])
  assert.match(unreachable.live.stale[0].why, new RegExp(lost.id))
  assert.ok(unreachable.ok, 'stale only where the report says why')

  // Every other event found no dependents, and looked them up (the Function's context names the lake's project).
  for (const s of result.steps.filter((s) => s.dependents.checks === 0 && s.invocations > 0)) {
    for (const r of s.reports.filter((r) => r.id !== null)) assert.ok(r.targets[0].dependents && !r.targets[0].dependents.notLookedUp && !r.targets[0].dependents.error, `${s.label}: ${JSON.stringify(r.targets[0].dependents)}`)
  }

  // A settings change whose run is killed at its timeout mid-roll: what it left is recorded on the Machines and
  // the next run (a plain content edit) finishes it — every Machine ends on the new settings, none restarted twice.
  const killed = step(result, 'settings v3')
  assert.equal(killed.killedRuns, 1)
  assert.ok(killed.leftByKill.length > 0, 'the kill left part of the roll')
  assert.equal(killed.leftByKill.length, 6 - killed.restarts, 'what was not restarted is held over to the next run')
  const next = step(result, 'next edit finishes the roll')
  assert.equal(next.restarts, killed.leftByKill.length, 'the next run restarts exactly what was left')
  assert.equal(next.stale.length, 0)
  assert.ok(next.reports.every((r) => r.ok && r.targets[0].restart?.cause === 'unfinished'), JSON.stringify(next.reports.map((r) => r.targets[0].restart)))
  assert.ok(step(result, 'duplicate').reports.every((r) => r.ok), 'a duplicate delivery is a success')

  // A Machine cut off during three publishes: away while cut off, caught up once restored.
  for (const label of ['nrt#0 cut off', 'publish 2/3', 'publish 3/3']) assert.equal(step(result, label).away.length, 1, label)
  const restored = step(result, 'nrt#0 restored')
  assert.equal(restored.caughtUp.length, 1)
  assert.match(restored.caughtUp[0].cause, /away/)
  // A suspended Machine resumes with old content and is caught up.
  const suspended = step(result, 'fra#0 suspended')
  assert.ok(suspended.reports.some((r) => r.targets[0].skipped.some((m) => m.code === 'suspended')), 'the report says the Machine is suspended')
  const resumed = step(result, 'fra#0 resumes')
  assert.equal(resumed.caughtUp.length, 1)
  // A Function run that fails after its retries: every Machine caught up within one interval plus one query.
  const failed = step(result, 'Function run fails')
  assert.equal(failed.failedRuns.length, 1, 'the run failed')
  assert.equal(failed.caughtUp.length, failed.servingMachines)
  for (const c of failed.caughtUp) assert.ok(c.staleMs <= bound, `${c.machine} stale ${c.staleMs} ms`)
  // A deletion missed by one Machine: its tombstone comes from reconciliation.
  const missed = step(result, 'delete missed')
  assert.equal(missed.caughtUp.length, 1)
  assert.match(missed.caughtUp[0].cause, /could not reach machine/)
  assert.ok(result.sanityRequests > 0)
})

test('flaky Machines API (429 with and without Retry-After, 5xx, ambiguous 408): still all fresh', async () => {
  const result = await run('flaky', short)
  assert.equal(result.ok, true)
  assert.equal(result.caughtUp, 0, 'every push landed despite the faults')
  assert.ok((result.faultsHit.list ?? 0) >= 3, JSON.stringify(result.faultsHit))
  assert.ok((result.faultsHit.restart ?? 0) >= 1, 'the ambiguous 408 was served')
  assert.equal(step(result, 'settings').restarts, 6, 'the Machine behind the 408 was restarted once, not twice')
})

test('a Machine that never comes back: the roll stops and the report says so', async () => {
  const result = await run('stuck-restart', short)
  assert.equal(result.ok, true)
  const settings = step(result, 'settings')
  const restarts = settings.reports.flatMap((r) => r.targets.map((t) => t.restart))
  assert.ok(restarts.some((r) => r && r.restarted < r.planned && /failed to restart/.test(r.stoppedEarly ?? '')), JSON.stringify(restarts))
  assert.ok(settings.reports.every((r) => !r.ok), 'the run is reported as not ok')
})

test('a Machine unreachable through the proxy: its pushes fail, the report says why, reconciliation catches it up', async () => {
  const result = await run('unreachable', scenario.steps.filter((s) => /^(create|edit title|settings)/.test(s.label)))
  assert.equal(result.ok, true)
  const caught = result.steps.flatMap((s) => s.caughtUp)
  assert.ok(caught.length > 0)
  assert.equal(new Set(caught.map((c) => c.machine)).size, 1, 'only the unreachable Machine')
  assert.ok(caught.every((c) => /could not reach machine|not started with passing checks/.test(c.cause)), JSON.stringify(caught))
})

const authorStep = scenario.steps.filter((s) => s.label.startsWith('edit author'))

test('dependents turned off: the post pages keep the old author on every Machine, and the check says so', async () => {
  // The control for the session above: the same edit, the Function told not to look dependents up.
  const result = await runSimulation({scenario: {...scenario, dependents: false, steps: authorStep}, machines: 2})
  const [s] = result.steps
  assert.equal(result.ok, false)
  assert.equal(s.warmed.reads, 3 * 2)
  assert.equal(s.dependents.freshByPush, 0)
  assert.equal(s.dependents.stale, 3 * 2)
  assert.deepEqual(s.stale.map((st) => [st.kind, st.id, st.why]).sort(), ['article-a1', 'article-a2', 'article-a3'].flatMap((id) => [['page', id, null], ['page', id, null]]))
  assert.match(s.stale[0].expected, /"author":"Ada Lovelace"/)
  assert.equal(s.reports[0].targets[0].dependents, null, 'not looked up')
})

test('a reconciliation that applies the author before its push: the push still refreshes the post pages', async () => {
  const result = await runSimulation({scenario: {...scenario, steps: authorStep.map((s) => ({...s, reconcileFirst: true}))}, machines: 2})
  const [s] = result.steps
  assert.equal(s.dependents.stale, 0, JSON.stringify(s.stale))
  assert.equal(result.ok, true)
})
