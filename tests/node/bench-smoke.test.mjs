// A short run of the bench harness (bench/bench.mjs) at tiny sizes: it runs end to end, says what it is doing, prints
// its table and the JSON and HTML paths, the JSON holds every figure (keys present, numbers finite) and the page every
// picture. It asserts nothing about timings.
// Needs pkg/ and dist/ (npm test builds them first). The cargo bench is skipped here (--no-native): compiling the
// bench profile can take a minute on a cold target directory.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {spawnSync} from 'node:child_process'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'

const root = fileURLToPath(new URL('../..', import.meta.url))

const finite = (value, where) => assert.ok(typeof value === 'number' && Number.isFinite(value), `${where}: expected a finite number, got ${JSON.stringify(value)}`)
const figures = (object, keys, where) => {
  assert.ok(object && typeof object === 'object', `${where}: missing`)
  for (const k of keys) finite(object[k], `${where}.${k}`)
}
/** Fresh in time, or a finite "not fresh after". */
const freshOrBounded = (r, key, where) => {
  if (r[key] === null) finite(r.notFreshAfterMs, `${where}.notFreshAfterMs`)
  else finite(r[key], `${where}.${key}`)
}

test('bench: a tiny run prints the table and writes JSON and HTML with every figure', {timeout: 170_000}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'))
  const out = join(dir, 'bench.json')
  try {
    const args = ['bench/bench.mjs', '--machines', '3', '--bursts', '3', '--publishes', '2', '--cold-reps', '2', '--wasm-iters', '20', '--no-native',
      '--limit-s', '15', '--burst-limit-s', '15', '--roll-limit-s', '30', '--out', out]
    const run = spawnSync(process.execPath, args, {cwd: root, encoding: 'utf8', timeout: 160_000})
    assert.equal(run.status, 0, `bench exited ${run.status}:\n${run.stderr}\n${run.stdout}`)
    for (const heading of ['publish → fresh', 'bursts of N', 'restart-type change', 'cold start', 'goals', `JSON: ${out}`, `HTML: ${join(dir, 'bench.html')}`]) {
      assert.ok(run.stdout.includes(heading), `the table has "${heading}"`)
    }
    // It says what it is doing as it goes: section, fleet size, strategy.
    for (const line of ['bench: cold start', 'bench: [1 fan-out] 3 Machines, engine: publish 1/2', 'bench: [2 bursts] 3 Machines, baseline', 'bench: [3 restart] 3 Machines, engine']) {
      assert.ok(run.stderr.includes(line), `progress "${line}"`)
    }

    const r = JSON.parse(readFileSync(out, 'utf8'))
    finite(r.totalMs, 'totalMs')
    figures(r.host, ['nproc', 'loadavgStart', 'loadavgEnd'], 'host')
    assert.equal(typeof r.host.cpu, 'string')
    figures(r.wasmSize, ['raw', 'gzip'], 'wasmSize')
    figures(r.coldStart, ['reps', 'nodeMs', 'oursMs', 'articleMs', 'overheadMs', 'articleOverheadMs', 'oursOverArticle'], 'coldStart')
    for (const side of ['ours', 'article']) {
      figures(r.coldStart.inProcess[side], ['importMs', 'firstCallMs', 'requests'], `coldStart.inProcess.${side}`)
      figures(r.coldStart.bundles[side], ['bytes', 'gzip'], `coldStart.bundles.${side}`)
    }
    figures(r.core.wasm, ['usPerEvent', 'firstEventUs', 'iterations', 'machines', 'requestsPerEvent', 'envVars'], 'core.wasm')
    assert.equal(r.core.wasm.requestsPerEvent, 25, 'one list and 24 pushes')
    assert.equal(typeof r.core.native.skipped, 'string', 'the native bench is reported as skipped')

    assert.equal(r.fleet.length, 1)
    const [f] = r.fleet
    assert.equal(f.machines, 3)
    figures(f.floor, ['p50', 'p95'], 'floor')
    figures(f.floor.farthest, ['p50', 'p95'], 'floor.farthest')
    for (const s of ['engine', 'engine-nodeps', 'engine-new', 'baseline']) {
      const p = f.publish[s]
      figures(p, ['p50', 'p95', 'restartsPerPublish', 'apiCallsPerPublish', 'rateLimited', 'failedRuns', 'maxNotServing', 'maxNotHealthy'], `publish.${s}`)
      assert.equal(p.samples.length, 2)
      assert.equal(Object.keys(p.byMachine).length, 3, `publish.${s}: a time to fresh per Machine`)
      for (const [id, m] of Object.entries(p.byMachine)) freshOrBounded({...m, notFreshAfterMs: 0}, 'p50', `publish.${s}.byMachine.${id}`)
    }
    assert.equal(f.bursts.length, 1)
    for (const s of ['engine', 'baseline']) {
      const b = f.bursts[0][s]
      figures(b, ['served', 'restarts', 'apiCalls', 'rateLimited', 'failedRuns', 'delivered', 'appRequests', 'maxNotServing', 'maxNotHealthy'], `bursts[0].${s}`)
      freshOrBounded(b, 'freshMs', `bursts[0].${s}`)
      figures(b.probes, ['served', 'total', 'refused', 'timeout', 'status'], `bursts[0].${s}.probes`)
      assert.ok(b.timeline.length > 0, `bursts[0].${s}: reads served over time`)
      figures(b.timeline[0], ['t', 'served', 'total'], `bursts[0].${s}.timeline[0]`)
      const c = f.restartChange[s]
      figures(c, ['maxNotServing', 'maxNotHealthy', 'restarts', 'served', 'apiCalls', 'rateLimited'], `restartChange.${s}`)
      freshOrBounded(c, 'freshHealthyMs', `restartChange.${s}`)
      figures(c.leastServingByRegion, ['ord', 'fra', 'nrt'], `restartChange.${s}.leastServingByRegion`)
      assert.ok(c.timeline.length > 0, `restartChange.${s}: reads served over time`)
    }
    // The two strategies differ where the bench says they do: the baseline restarts on a content-only publish.
    assert.equal(f.publish.engine.restartsPerPublish, 0)
    assert.equal(f.publish.baseline.restartsPerPublish, 3)

    const ids = r.goals.map((g) => g.id)
    assert.deepEqual(ids, ['wasmSize', 'coldStart', 'coldStartArticle', 'coreNative', 'coreWasm', 'bursts'])
    for (const g of r.goals) {
      assert.ok(typeof g.figure === 'string' && typeof g.target === 'string', g.id)
      assert.ok(g.met === true || g.met === false || (g.id === 'coreNative' && g.met === null), `${g.id}: met is ${g.met}`)
    }

    // The pictures: one self-contained page, a chart per figure it promises.
    const html = readFileSync(join(dir, 'bench.html'), 'utf8')
    assert.ok(!/<script|https?:\/\/(?!www\.w3\.org)/.test(html), 'no script, nothing fetched')
    for (const title of ['time from publish to serving the new revision, per Machine', 'a burst of 3 publishes: reads served over time', 'a restart-type change: reads served over time']) {
      assert.ok(html.includes(title), `the page has "${title}"`)
    }
    assert.ok((html.match(/<svg /g) ?? []).length >= 4)
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
})
