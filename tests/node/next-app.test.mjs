// A real Next.js app (examples/next-app: App Router, `next start`, the package's Next.js kit) on the local Fly with
// 3 Machines, each its own process with its own copy of the build: the README's `npm run simulate -- --app next`
// (local/simulate.mjs → local/next-app.mjs), with --json. Content goes Sanity (local Content Lake, real
// @sanity/client) → the blueprint's filter and projection → the packed Function → every Machine; then each
// Machine's rendered HTML is read directly. A control push that revalidates nothing leaves the cached pages as they
// were (so the pages are cached); after each Function run, the first read of every Machine shows the publish, the
// rename and the delete — nothing waits, nothing restarts. A page cached under Sanity's sync tags (as next-sanity
// caches) is refreshed on every Machine by the sync-tag Function's push, and by nothing else. Builds the example once (skipped when its sources and
// the package are unchanged). Needs `npm run build`.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {ROOT, run} from './support/run.mjs'

test('Next.js on 3 Machines: publish, rename, sync tags and delete reach every instance without a restart', {timeout: 600_000}, async (t) => {
  const started = Date.now()
  const r = await run(process.execPath, ['local/simulate.mjs', '--app', 'next', '--machines', '3', '--json'], {cwd: ROOT, timeoutMs: 540_000})
  assert.equal(r.code, 0, r.output)
  const result = JSON.parse(r.output.slice(r.output.indexOf('{')))
  assert.equal(result.machines, 3)
  const byLabel = Object.fromEntries(result.steps.map((s) => [s.label, s]))
  assert.deepEqual(Object.keys(byLabel), [
    'before: nothing published', 'control: push, nothing revalidated', 'publish /blog/hello', 'rename to /blog/hello-again',
    'live: cached under sync tags', 'edit the title', 'live: still cached after a content push', 'live: the sync-tag push refreshes it', 'delete',
  ])
  for (const step of result.steps) {
    assert.equal(step.machines.length, 3)
    assert.deepEqual(step.machines.flatMap((m) => m.problems.map((p) => `${m.id}: ${p}`)), [], step.label)
    assert.equal(step.restarts, 0, `${step.label}: no Machine restarted`)
  }
  assert.deepEqual(byLabel['control: push, nothing revalidated'].acks.map((a) => [a.httpStatus, a.status]), [[200, 'applied'], [200, 'applied'], [200, 'applied']])
  for (const label of ['publish /blog/hello', 'rename to /blog/hello-again', 'delete']) {
    assert.equal(byLabel[label].synced, 3, `${label}: every Machine acked the push`)
    assert.ok(byLabel[label].ok, label)
  }
  // A page cached under sync tags (as next-sanity caches) keeps its render through a content push, and every Machine
  // renders the edit once the sync-tag Function pushed the tags; its done came once, after the last Machine answered.
  assert.ok(byLabel['live: still cached after a content push'].ok, 'the page is cached under its sync tags only')
  const tags = byLabel['live: the sync-tag push refreshes it']
  assert.equal(tags.synced, 3, 'every Machine acked the sync tags')
  assert.deepEqual([tags.done.calls, tags.done.afterLastAnswer], [1, true])
  assert.ok(tags.done.tags.length > 0 && tags.done.tags.every((t) => t.startsWith('s1:')), JSON.stringify(tags.done.tags))
  assert.ok(tags.ok)
  // The same process served every step on each Machine.
  assert.equal(new Set(result.steps.map((s) => s.machines.map((m) => m.pid).join(','))).size, 1)
  assert.ok(result.ok)
  t.diagnostic(`next build ${result.built ? `${result.buildMs} ms` : 'reused'}; 3 Machines up in ${result.bootMs} ms; pushes ${result.steps.filter((s) => s.via === 'function').map((s) => `${s.durationMs} ms`).join(' / ')}; whole test ${Date.now() - started} ms`)
})
