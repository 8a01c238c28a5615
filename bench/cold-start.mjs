// Cold start of the built Function: fresh `node` processes, wall time from spawn to exit, interleaved so drift
// on a shared machine hits every variant alike. Three variants:
//   node      `node -e 0`                                       the floor: a Node process that does nothing
//   import    import dist/functions/fly-sync/index.js           parse and evaluate the bundle (the wasm's base64 in it)
//   call      import + a dry call of `handler`                  also decodes and compiles the wasm (`loadWasm`) and
//                                                               crosses into it once (the call stops at the config)
// The overhead figure is call − node: what a cold Function invocation pays before its first request.
import {spawnSync} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {gzipSync} from 'node:zlib'
import {pathToFileURL} from 'node:url'

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** @param {{functionPath: string, reps?: number}} o */
export function benchColdStart({functionPath, reps = 15}) {
  if (!existsSync(functionPath)) throw new Error(`${functionPath} missing: run npm run build first`)
  const url = JSON.stringify(pathToFileURL(functionPath).href)
  const variants = {
    node: ['-e', '0'],
    import: ['--input-type=module', '-e', `await import(${url})`],
    // No FLY_* variables in the child: the handler compiles the wasm, the core refuses the configuration, the
    // handler throws. Exactly the work before a real run's first request, minus reading a valid config.
    call: [
      '--input-type=module',
      '-e',
      `const t0 = performance.now(); const m = await import(${url}); const t1 = performance.now();` +
        ` try { await m.handler({context: {}, event: {data: {}}}) } catch {}` +
        ` process.stdout.write('BENCH ' + JSON.stringify({importMs: t1 - t0, callMs: performance.now() - t1}) + '\\n')`,
    ],
  }
  const env = {PATH: process.env.PATH ?? ''}
  /** In-process timings the `call` child reports: import, and the first call (wasm decoded and compiled). */
  const inside = {importMs: [], callMs: []}
  const run = (args) => {
    const t = process.hrtime.bigint()
    const r = spawnSync(process.execPath, args, {env, stdio: ['ignore', 'pipe', 'ignore'], encoding: 'utf8'})
    const ms = Number(process.hrtime.bigint() - t) / 1e6
    if (r.status !== 0) throw new Error(`cold start: node ${args.join(' ')} exited ${r.status}`)
    const line = r.stdout.split('\n').find((l) => l.startsWith('BENCH '))
    return {ms, inside: line ? JSON.parse(line.slice(6)) : null}
  }
  for (const args of Object.values(variants)) run(args) // warm the page cache
  const samples = Object.fromEntries(Object.keys(variants).map((k) => [k, []]))
  for (let i = 0; i < reps; i++) {
    for (const [k, args] of Object.entries(variants)) {
      const r = run(args)
      samples[k].push(r.ms)
      if (r.inside) for (const key of Object.keys(inside)) inside[key].push(r.inside[key])
    }
  }
  const m = Object.fromEntries(Object.entries(samples).map(([k, v]) => [k, median(v)]))
  return {
    inProcess: {importMs: median(inside.importMs), firstCallMs: median(inside.callMs)},
    reps,
    nodeMs: m.node,
    importMs: m.import,
    callMs: m.call,
    overheadMs: m.call - m.node,
    importOverheadMs: m.import - m.node,
    samples,
  }
}

/** @param {string} wasmPath */
export function wasmSize(wasmPath) {
  const bytes = readFileSync(wasmPath)
  return {raw: bytes.length, gzip: gzipSync(bytes, {level: 9}).length}
}
