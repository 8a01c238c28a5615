// npm run bench [-- --machines 6,24,96 --bursts 20,200 --publishes 5 ...]   (node bench/bench.mjs --help)
//
// One run, one simulated fleet definition, two strategies: our engine (the real `handler` of function.ts) and the
// baseline of the integration article (bench/baseline.mjs: one POST through the proxy, then restart every Machine
// at once, on every event). Every measurement starts a fresh local Fly of the same size and seed (bench/harness.mjs),
// so both strategies start from the same Machines, the same content and full rate-limit buckets. Then the costs of
// the product itself: cold start of the built Function, wasm size, and the core's cost per event natively
// (benches/core.rs) and through the wasm boundary (bench/core-wasm.mjs). Prints a table, writes JSON.
// Benchmarks print figures; they assert nothing about timings.
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {availableParallelism, loadavg} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'
import {spawnSync} from 'node:child_process'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const started = Date.now()

const {values: flags} = parseArgs({
  options: {
    machines: {type: 'string', default: '6,24,96'},
    bursts: {type: 'string', default: '20,200'},
    publishes: {type: 'string', default: '5'},
    concurrency: {type: 'string', default: '20'},
    'max-unavailable': {type: 'string', default: '2'},
    seed: {type: 'string', default: '1'},
    'limit-s': {type: 'string', default: '45'},
    'heavy-pushes': {type: 'string', default: '5000'},
    'heavy-limit-s': {type: 'string', default: '10'},
    'roll-limit-s': {type: 'string', default: '90'},
    'cold-reps': {type: 'string', default: '15'},
    'wasm-iters': {type: 'string', default: '1000'},
    'native-iters': {type: 'string', default: '2000'},
    'no-native': {type: 'boolean', default: false},
    'no-fleet': {type: 'boolean', default: false},
    out: {type: 'string', default: join(root, 'out/bench.json')},
    help: {type: 'boolean', default: false},
  },
})

if (flags.help) {
  console.log(`usage: npm run bench -- [options]      (npm run bench builds first; node bench/bench.mjs does not)
  --machines 6,24,96       fleet sizes (Machines over ord, fra, nrt)
  --bursts 20,200          burst sizes (content-only publishes delivered together)
  --publishes 5            single-document publishes per size and strategy (p50 / p95)
  --concurrency 20         Function invocations in flight at once during a burst
  --max-unavailable 2      the engine's FLY_MAX_UNAVAILABLE
  --seed 1                 the local Fly's seed (Machine ids, regions, drawn delays)
  --limit-s 45             a measurement stops waiting for every Machine to be fresh after this long
  --heavy-pushes 5000      bursts of more pushes than this (Machines × N) ...
  --heavy-limit-s 10       ... stop after this long instead
  --roll-limit-s 90        limit for the restart-type change
  --cold-reps 15           fresh processes per cold-start variant (median)
  --wasm-iters 1000        events through the wasm boundary
  --native-iters 2000      events natively (cargo bench --bench core)
  --no-native              skip the cargo bench
  --no-fleet               skip the fleet measurements
  --out out/bench.json     where the JSON goes`)
  process.exit(0)
}

const list = (v, name) => {
  const xs = v.split(',').map((s) => Number(s.trim()))
  if (!xs.length || xs.some((x) => !Number.isInteger(x) || x < 1)) {
    console.error(`--${name}: expected whole numbers separated by commas`)
    process.exit(2)
  }
  return xs
}
const int = (v, name) => list(v, name)[0]
const settings = {
  machines: list(flags.machines, 'machines'),
  bursts: list(flags.bursts, 'bursts'),
  publishes: int(flags.publishes, 'publishes'),
  concurrency: int(flags.concurrency, 'concurrency'),
  maxUnavailable: int(flags['max-unavailable'], 'max-unavailable'),
  seed: int(flags.seed, 'seed'),
  limitMs: int(flags['limit-s'], 'limit-s') * 1000,
  heavyPushes: int(flags['heavy-pushes'], 'heavy-pushes'),
  heavyLimitMs: int(flags['heavy-limit-s'], 'heavy-limit-s') * 1000,
  rollLimitMs: int(flags['roll-limit-s'], 'roll-limit-s') * 1000,
  coldReps: int(flags['cold-reps'], 'cold-reps'),
  wasmIterations: int(flags['wasm-iters'], 'wasm-iters'),
  nativeIterations: int(flags['native-iters'], 'native-iters'),
  native: !flags['no-native'],
  fleet: !flags['no-fleet'],
  regions: ['ord', 'fra', 'nrt'],
}

const progress = (line) => process.stderr.write(`bench: ${line}\n`)
const cpuModel = (() => {
  try {
    return readFileSync('/proc/cpuinfo', 'utf8').match(/^model name\s*:\s*(.+)$/m)?.[1]?.trim() ?? 'unknown'
  } catch {
    return 'unknown'
  }
})()

const result = {
  version: 1,
  command: `node bench/bench.mjs ${process.argv.slice(2).join(' ')}`.trim(),
  startedAt: new Date(started).toISOString(),
  totalMs: null,
  host: {nproc: availableParallelism(), cpu: cpuModel, node: process.version, loadavgStart: loadavg()[0], loadavgEnd: null},
  settings,
  wasmSize: null,
  coldStart: null,
  core: {wasm: null, native: null},
  fleet: [],
  goals: [],
}

// ---------- the product's own costs ----------

const {benchColdStart, wasmSize} = await import('./cold-start.mjs')
const wasmPath = join(root, 'pkg/sanity_fly_sync_bg.wasm')
result.wasmSize = {path: 'pkg/sanity_fly_sync_bg.wasm', ...wasmSize(wasmPath)}
progress(`cold start: ${settings.coldReps} × 3 fresh node processes`)
result.coldStart = benchColdStart({functionPath: join(root, 'dist/functions/fly-sync/index.js'), reps: settings.coldReps})

progress(`core through wasm: ${settings.wasmIterations} events`)
const {benchCoreWasm} = await import('./core-wasm.mjs')
result.core.wasm = benchCoreWasm({iterations: settings.wasmIterations})

if (settings.native) {
  progress(`core native: cargo bench --bench core (${settings.nativeIterations} events; compiles the bench profile first if needed)`)
  const t = Date.now()
  const cargoBin = join(process.env.CARGO_HOME ?? join(process.env.HOME ?? '', '.cargo'), 'bin')
  const r = spawnSync('cargo', ['bench', '--quiet', '--bench', 'core', '--', '--iterations', String(settings.nativeIterations), '--json'], {
    cwd: root,
    encoding: 'utf8',
    env: {...process.env, PATH: `${cargoBin}:${process.env.PATH}`},
    timeout: 600_000,
  })
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('{"bench":"core-native"'))
  result.core.native = line
    ? {...JSON.parse(line), wallMs: Date.now() - t}
    : {skipped: `cargo bench failed (${r.error?.message ?? `exit ${r.status}`}): ${(r.stderr ?? '').trim().split('\n').slice(-3).join(' | ')}`}
} else {
  result.core.native = {skipped: '--no-native'}
}

// ---------- the fleet ----------

if (settings.fleet) {
  const h = await import('./harness.mjs')
  const world = (machines) => h.startWorld({machines, seed: settings.seed, regions: settings.regions, maxUnavailable: settings.maxUnavailable})
  for (const m of settings.machines) {
    const row = {machines: m, floor: null, publish: {}, bursts: [], restartChange: {}}
    result.fleet.push(row)
    for (const strategy of ['engine', 'baseline']) {
      progress(`${m} Machines, ${strategy}: ${settings.publishes} single publishes`)
      const w = await world(m)
      try {
        if (strategy === 'engine') row.floor = await h.measureFloor(w, {count: settings.publishes})
        const t = Date.now()
        row.publish[strategy] = {...(await h.measurePublishes(w, strategy, {count: settings.publishes, limitMs: settings.limitMs})), wallMs: Date.now() - t}
      } finally {
        await w.close()
      }
    }
    for (const n of settings.bursts) {
      const heavy = m * n > settings.heavyPushes
      const limitMs = heavy ? settings.heavyLimitMs : settings.limitMs
      const burst = {n, limitMs, heavy}
      row.bursts.push(burst)
      for (const strategy of ['engine', 'baseline']) {
        progress(`${m} Machines, ${strategy}: burst of ${n} (limit ${limitMs / 1000} s)`)
        const w = await world(m)
        try {
          const t = Date.now()
          burst[strategy] = {...(await h.measureBurst(w, strategy, {n, concurrency: settings.concurrency, limitMs})), wallMs: Date.now() - t}
        } finally {
          await w.close()
        }
      }
    }
    for (const strategy of ['engine', 'baseline']) {
      progress(`${m} Machines, ${strategy}: restart-type change`)
      const w = await world(m)
      try {
        const t = Date.now()
        row.restartChange[strategy] = {...(await h.measureRestartChange(w, strategy, {limitMs: settings.rollLimitMs})), wallMs: Date.now() - t}
      } finally {
        await w.close()
      }
    }
  }
}

// ---------- goals ----------

const KiB = 1024
const goal = (id, text, target, figure, met) => result.goals.push({id, goal: text, target, figure, met})
const fleet24 = result.fleet.length ? result.fleet.reduce((a, b) => (Math.abs(b.machines - 24) < Math.abs(a.machines - 24) ? b : a)) : null
if (fleet24) {
  const e = fleet24.publish.engine
  const ratio = e.p50 !== null ? e.p50 / fleet24.floor.p50 : null
  const far = e.p50 !== null ? e.p50 / fleet24.floor.farthest.p50 : null
  goal('fanOut', `publish → fresh on every Machine (p50) vs the floor, ${fleet24.machines} Machines`, '≤ 1.3× floor',
    ratio === null ? 'not fresh' : `${ratio.toFixed(2)}× (${far.toFixed(2)}× a POST to ${fleet24.floor.farthest.region})`, ratio !== null && ratio <= 1.3)
  // Judged on the bursts that ran to the end. A burst cut at its limit saturated the simulator (one Node process
  // runs the Function, the proxy and every Machine): its probes time out for want of CPU, not because a Machine
  // stopped serving. Its figures are shown beside the verdict.
  const all = result.fleet.flatMap((r) => r.bursts.map((b) => ({machines: r.machines, n: b.n, ...b.engine})))
  const bursts = all.filter((b) => b.settled)
  const cut = all.filter((b) => !b.settled)
  const restarts = bursts.reduce((n, b) => n + b.restarts, 0)
  const served = bursts.length ? Math.min(...bursts.map((b) => b.served)) : null
  const failed = (list) => {
    const sum = (k) => list.reduce((n, b) => n + b.probes[k], 0)
    const n = sum('refused') + sum('timeout') + sum('status')
    return n ? ` (failed reads: ${sum('refused')} refused, ${sum('timeout')} timed out, ${sum('status')} non-2xx)` : ''
  }
  const cutNote = cut.map((b) => `; cut ${b.machines}×${b.n}: ${b.restarts} and ${pct(b.served)}${failed([b])}`).join('')
  goal('bursts', 'content-only bursts: restarts, least share of reads served (completed bursts)', '0 and 100%',
    `${restarts} and ${pct(served)}${failed(bursts)}${cutNote}`, bursts.length > 0 && restarts === 0 && served === 1)
  const rolls = result.fleet.map((r) => r.restartChange.engine)
  const most = Math.max(...rolls.map((r) => r.maxNotServing), ...result.fleet.map((r) => r.publish.engine.maxNotServing), ...all.map((b) => b.maxNotServing))
  goal('maxUnavailable', 'most Machines down at once, any measurement (restart change included)', `≤ ${settings.maxUnavailable} (max_unavailable)`,
    `${most} (unhealthy: ${Math.max(...rolls.map((r) => r.maxNotHealthy))})`, most <= settings.maxUnavailable)
}
const cs = result.coldStart
goal('coldStart', 'cold start: import + first call vs `node -e 0` (medians)', '≤ +8 ms', `+${cs.overheadMs.toFixed(1)} ms`, cs.overheadMs <= 8)
goal('wasmSize', 'wasm size raw / gzip -9', '≤ 120 / 50 KiB', `${(result.wasmSize.raw / KiB).toFixed(1)} / ${(result.wasmSize.gzip / KiB).toFixed(1)} KiB`,
  result.wasmSize.raw <= 120 * KiB && result.wasmSize.gzip <= 50 * KiB)
goal('coreWasm', 'core per event through wasm (24-Machine fan-out)', '≤ 100 µs', `${result.core.wasm.usPerEvent.toFixed(1)} µs`, result.core.wasm.usPerEvent <= 100)
if (result.core.native.usPerEvent !== undefined) {
  goal('coreNative', 'core per event natively (24-Machine fan-out)', '≤ 20 µs', `${result.core.native.usPerEvent.toFixed(1)} µs`, result.core.native.usPerEvent <= 20)
} else {
  goal('coreNative', 'core per event natively (24-Machine fan-out)', '≤ 20 µs', `skipped (${result.core.native.skipped})`, null)
}

result.totalMs = Date.now() - started
result.host.loadavgEnd = loadavg()[0]
const outPath = resolve(flags.out)
mkdirSync(dirname(outPath), {recursive: true})
writeFileSync(outPath, `${JSON.stringify(result, null, 2)}\n`)

// ---------- the table ----------

function pct(x) {
  return x === null || x === undefined ? '-' : `${(x * 100).toFixed(1)}%`
}
const ms = (x) => (x === null || x === undefined ? '-' : `${Math.round(x)}`)
const secs = (x) => `${(x / 1000).toFixed(1)} s`
const ratio = (a, b) => (a === null || b === null || !b ? '-' : `${(a / b).toFixed(1)}×`)
function table(headers, rows, left = 2) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => cells.map((c, i) => (i < left || i === cells.length - 1 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}
const freshAfter = (r) => (r.freshMs !== null ? secs(r.freshMs) : `not fresh after ${secs(r.notFreshAfterMs)} (${r.freshMachines}/${r.machines})`)

const out = []
const s = settings
out.push(`sanity-fly-sync bench — ${result.host.nproc} × ${cpuModel}, Node ${process.version}, load average ${result.host.loadavgStart.toFixed(2)} at start`)
if (s.fleet) {
  out.push(`Fleet: ${s.machines.join(' / ')} Machines over ${s.regions.join(', ')} (the local Fly: proxy latency ord 5, fra 40, nrt 80 ms; Fly's rate`)
  out.push(`limits, 1/s burst 3 per Machine and action, list per app). Every Machine runs local/app.mjs with the reference receiver`)
  out.push(`(its periodic catch-up set past the run). One fresh fleet per measurement, seed ${s.seed}. Engine: the real handler,`)
  out.push(`max_unavailable ${s.maxUnavailable}. Baseline: bench/baseline.mjs (one POST through the proxy, then restart all Machines at once).`)
  out.push(`Limits: ${secs(s.limitMs)} per measurement, ${secs(s.heavyLimitMs)} for bursts over ${s.heavyPushes} pushes (Machines × N), ${secs(s.rollLimitMs)} for the restart change.`)
  out.push('')
  out.push(`1. publish → fresh on every Machine (${s.publishes} single-document publishes; floor: one signed POST through the proxy,`)
  out.push(`   which picks a Machine in the edge region; "far": the same POST pinned to a Machine in the farthest region)`)
  const pubRows = []
  for (const r of result.fleet) {
    pubRows.push([r.machines, 'floor', ms(r.floor.p50), ms(r.floor.p95), '1.0×', '-', '-', '-', '-', '-', `far (${r.floor.farthest.region}): ${ms(r.floor.farthest.p50)} / ${ms(r.floor.farthest.p95)} ms`])
    for (const k of ['engine', 'baseline']) {
      const p = r.publish[k]
      pubRows.push([r.machines, k, ms(p.p50), ms(p.p95), ratio(p.p50, r.floor.p50), ratio(p.p50, r.floor.farthest.p50), p.restartsPerPublish, p.apiCallsPerPublish, p.rateLimited, p.maxNotServing, p.allFresh ? '' : 'not all fresh'])
    }
  }
  out.push(table(['Machines', 'strategy', 'p50 ms', 'p95 ms', '×floor', '×far', 'restarts/pub', 'API/pub', '429', 'most down', ''], pubRows))
  out.push('')
  out.push(`2. bursts of N content-only publishes (one invocation per document, ${s.concurrency} in flight; probes read every Machine every 100 ms)`)
  const burstRows = []
  for (const r of result.fleet) {
    for (const b of r.bursts) {
      for (const k of ['engine', 'baseline']) {
        const x = b[k]
        burstRows.push([r.machines, `${b.n} ${k}`, pct(x.served), `${x.probes.refused}/${x.probes.timeout}`, x.restarts, x.apiCalls, x.rateLimited, `${x.failedRuns}/${x.delivered}`, x.appRequests, x.maxNotServing, freshAfter(x) + (x.settled ? '' : ', cut')])
      }
    }
  }
  out.push(table(['Machines', 'N strategy', 'served', 'refused/t.o.', 'restarts', 'API', '429', 'failed/run', 'pushes', 'most down', 'every Machine fresh after'], burstRows))
  out.push(`   (served: probe reads answered; refused/t.o.: failed reads refused by a Machine not serving / timed out after 1 s, which on`)
  out.push(`   this one-process simulator means CPU saturation; failed/run: invocations that threw / invocations delivered before the`)
  out.push(`   limit; pushes: requests through the app URL; cut: stopped at the limit)`)
  out.push('')
  out.push(`3. restart-type change (siteSettings, read at boot: every Machine must restart)`)
  const rollRows = []
  for (const r of result.fleet) {
    for (const k of ['engine', 'baseline']) {
      const x = r.restartChange[k]
      rollRows.push([r.machines, k, x.maxNotServing, x.maxNotHealthy, x.freshHealthyMs !== null ? secs(x.freshHealthyMs) : `not after ${secs(x.notFreshAfterMs)}`, x.restarts, pct(x.served), x.apiCalls, x.rateLimited, x.failedRuns])
    }
  }
  out.push(table(['Machines', 'strategy', 'most down', 'most unhealthy', 'fresh + healthy after', 'restarts', 'served', 'API', '429', 'failed runs'], rollRows))
  out.push('')
}
out.push(`4. the Function itself`)
out.push(`   cold start (median of ${cs.reps} fresh processes each): node -e 0 ${cs.nodeMs.toFixed(1)} ms; + import of dist/functions/fly-sync/index.js ${cs.importMs.toFixed(1)} ms (+${cs.importOverheadMs.toFixed(1)}); + first call, wasm compiled ${cs.callMs.toFixed(1)} ms (+${cs.overheadMs.toFixed(1)})`)
out.push(`   in the process (medians): import ${cs.inProcess.importMs.toFixed(1)} ms, first call ${cs.inProcess.firstCallMs.toFixed(1)} ms (base64 → bytes, wasm compile + instantiate, one call into the core)`)
out.push(`   wasm: ${result.wasmSize.raw.toLocaleString('en')} bytes raw, ${result.wasmSize.gzip.toLocaleString('en')} bytes gzip -9 (${result.wasmSize.path})`)
const cw = result.core.wasm
out.push(`   core per event, 24-Machine fan-out with canned answers (parse event + config, list, ${cw.requestsPerEvent - 1} pushes, acks, report):`)
out.push(`     through wasm ${cw.usPerEvent.toFixed(1)} µs (${cw.iterations} events, SyncEngine from Node)`)
const nat = result.core.native
if (nat.usPerEvent !== undefined) {
  const phases = Object.entries(nat.phasesUs ?? {}).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')
  out.push(`     native ${nat.usPerEvent.toFixed(1)} µs (${nat.iterations} events, cargo bench --bench core, ${nat.profile}; ${secs(nat.wallMs)} with the build)`)
  out.push(`       µs by phase: ${phases}`)
} else {
  out.push(`     native: skipped (${nat.skipped})`)
}
out.push('')
out.push('goals (our engine)')
out.push(table(['goal', 'target', 'figure', 'met'], result.goals.map((g) => [g.goal, g.target, g.figure, g.met === null ? '-' : g.met ? 'met' : 'MISSED']), 4))
out.push('')
out.push(`JSON: ${outPath}`)
out.push(`total ${secs(result.totalMs)} (load average ${result.host.loadavgEnd.toFixed(2)} at the end)`)
console.log(out.join('\n'))
