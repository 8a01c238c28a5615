// A short run of the bench harness (bench/bench.mjs) at tiny sizes: it runs end to end, prints its table and the
// JSON path, and the JSON holds every figure (keys present, numbers finite). It asserts nothing about timings.
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

test('bench: a tiny run prints the table and writes JSON with every figure', {timeout: 90_000}, () => {
  const dir = mkdtempSync(join(tmpdir(), 'bench-smoke-'))
  const out = join(dir, 'bench.json')
  try {
    const args = ['bench/bench.mjs', '--machines', '3', '--bursts', '3', '--publishes', '2', '--cold-reps', '3', '--wasm-iters', '20', '--no-native',
      '--limit-s', '15', '--heavy-limit-s', '15', '--roll-limit-s', '20', '--out', out]
    const run = spawnSync(process.execPath, args, {cwd: root, encoding: 'utf8', timeout: 80_000})
    assert.equal(run.status, 0, `bench exited ${run.status}:\n${run.stderr}\n${run.stdout}`)
    for (const heading of ['publish → fresh', 'bursts of N', 'restart-type change', 'cold start', 'goals', `JSON: ${out}`]) {
      assert.ok(run.stdout.includes(heading), `the table has "${heading}"`)
    }

    const r = JSON.parse(readFileSync(out, 'utf8'))
    finite(r.totalMs, 'totalMs')
    figures(r.host, ['nproc', 'loadavgStart', 'loadavgEnd'], 'host')
    assert.equal(typeof r.host.cpu, 'string')
    figures(r.wasmSize, ['raw', 'gzip'], 'wasmSize')
    figures(r.coldStart, ['reps', 'nodeMs', 'importMs', 'callMs', 'overheadMs', 'importOverheadMs'], 'coldStart')
    figures(r.coldStart.inProcess, ['importMs', 'firstCallMs'], 'coldStart.inProcess')
    figures(r.core.wasm, ['usPerEvent', 'iterations', 'machines', 'requestsPerEvent'], 'core.wasm')
    assert.equal(r.core.wasm.requestsPerEvent, 25, 'one list and 24 pushes')
    assert.equal(typeof r.core.native.skipped, 'string', 'the native bench is reported as skipped')

    assert.equal(r.fleet.length, 1)
    const [f] = r.fleet
    assert.equal(f.machines, 3)
    figures(f.floor, ['p50', 'p95'], 'floor')
    figures(f.floor.farthest, ['p50', 'p95'], 'floor.farthest')
    for (const s of ['engine', 'baseline']) {
      const p = f.publish[s]
      figures(p, ['p50', 'p95', 'restartsPerPublish', 'apiCallsPerPublish', 'rateLimited', 'failedRuns', 'maxNotServing', 'maxNotHealthy'], `publish.${s}`)
      assert.equal(p.samples.length, 2)
      assert.equal(f.bursts.length, 1)
      const b = f.bursts[0][s]
      figures(b, ['served', 'restarts', 'apiCalls', 'rateLimited', 'failedRuns', 'delivered', 'appRequests', 'maxNotServing', 'maxNotHealthy'], `bursts[0].${s}`)
      freshOrBounded(b, 'freshMs', `bursts[0].${s}`)
      figures(b.probes, ['served', 'total', 'refused', 'timeout', 'status'], `bursts[0].${s}.probes`)
      const c = f.restartChange[s]
      figures(c, ['maxNotServing', 'maxNotHealthy', 'restarts', 'served', 'apiCalls', 'rateLimited'], `restartChange.${s}`)
      freshOrBounded(c, 'freshHealthyMs', `restartChange.${s}`)
    }
    // The two strategies differ where the bench says they do: the baseline restarts on a content-only publish.
    assert.equal(f.publish.engine.restartsPerPublish, 0)
    assert.equal(f.publish.baseline.restartsPerPublish, 3)

    const ids = r.goals.map((g) => g.id)
    assert.deepEqual(ids, ['fanOut', 'bursts', 'maxUnavailable', 'coldStart', 'wasmSize', 'coreWasm', 'coreNative'])
    for (const g of r.goals) {
      assert.ok(typeof g.figure === 'string' && typeof g.target === 'string', g.id)
      assert.ok(g.met === true || g.met === false || (g.id === 'coreNative' && g.met === null), `${g.id}: met is ${g.met}`)
    }
  } finally {
    rmSync(dir, {recursive: true, force: true})
  }
})
