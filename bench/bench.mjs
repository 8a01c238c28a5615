// npm run bench [-- --machines 24,96 --bursts 20,200 --publishes 15 ...]   (node bench/bench.mjs --help)
//
// One run, one simulated fleet definition, three strategies: our engine (the real `handler` of function.ts) in a
// process that has run before, the same handler as a new process's first run, and the integration article's
// handler (bench/baseline.mjs: refetch, one POST through the proxy, then restart every Machine at once, on every
// event). Both APIs answer in 30–50 ms (the Machines API and Sanity's), as real ones do. Every measurement starts
// a fresh local Fly of the same size and seed (bench/harness.mjs), so every strategy starts from the same Machines,
// the same content and full rate-limit buckets. Then the costs of the product itself: cold start against the
// article's bundled handler, the Function's wasm size, and the core's cost per event natively (benches/core.rs) and
// through the wasm boundary (bench/core-wasm.mjs). Prints progress as it goes, then a table with every goal and its
// verdict; writes JSON and an HTML page of pictures beside it. Benchmarks print figures; they assert nothing.
import {mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {availableParallelism, loadavg} from 'node:os'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'
import {spawnSync} from 'node:child_process'
import {renderHtml} from './report-html.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const started = Date.now()

const {values: flags} = parseArgs({
  options: {
    machines: {type: 'string', default: '24,96'},
    bursts: {type: 'string', default: '20,200'},
    publishes: {type: 'string', default: '15'},
    concurrency: {type: 'string', default: '20'},
    'max-unavailable': {type: 'string', default: '33%'},
    'api-latency-ms': {type: 'string', default: '30-50'},
    seed: {type: 'string', default: '1'},
    'limit-s': {type: 'string', default: '45'},
    'burst-limit-s': {type: 'string', default: '120'},
    'roll-limit-s': {type: 'string', default: '90'},
    'cold-reps': {type: 'string', default: '30'},
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
  --machines 24,96         fleet sizes (Machines over ord, fra, nrt)
  --bursts 20,200          burst sizes (content-only publishes delivered together)
  --publishes 15           single-document publishes per size and strategy (p50 / p95)
  --concurrency 20         Function invocations in flight at once during a burst
  --max-unavailable 33%    the engine's FLY_MAX_UNAVAILABLE (a count, or a share of each region)
  --api-latency-ms 30-50   the Machines API's and Sanity's answer latency, drawn per request (ms, or min-max)
  --seed 1                 the local Fly's seed (Machine ids, regions, drawn delays)
  --limit-s 45             a publish stops waiting for every Machine to be fresh after this long
  --burst-limit-s 120      ... a burst after this long
  --roll-limit-s 90        ... the restart-type change after this long
  --cold-reps 30           rounds of the cold start (each: node -e 0, ours, the article's, in rotating order)
  --wasm-iters 1000        events through the wasm boundary
  --native-iters 2000      events natively (cargo bench --bench core)
  --no-native              skip the cargo bench
  --no-fleet               skip the fleet measurements
  --out out/bench.json     where the JSON goes (the HTML page goes beside it)`)
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
const latency = (() => {
  const m = /^(\d+)(?:-(\d+))?$/.exec(flags['api-latency-ms'].trim())
  if (!m) {
    console.error('--api-latency-ms: expected a number of ms or min-max')
    process.exit(2)
  }
  return m[2] === undefined ? Number(m[1]) : [Number(m[1]), Number(m[2])]
})()
const settings = {
  machines: list(flags.machines, 'machines'),
  bursts: list(flags.bursts, 'bursts'),
  publishes: int(flags.publishes, 'publishes'),
  concurrency: int(flags.concurrency, 'concurrency'),
  maxUnavailable: flags['max-unavailable'].trim(),
  apiLatencyMs: latency,
  seed: int(flags.seed, 'seed'),
  limitMs: int(flags['limit-s'], 'limit-s') * 1000,
  burstLimitMs: int(flags['burst-limit-s'], 'burst-limit-s') * 1000,
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
  version: 2,
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
result.wasmSize = {path: 'pkg/sanity_fly_sync_bg.wasm', ...wasmSize(join(root, 'pkg/sanity_fly_sync_bg.wasm'))}
progress(`cold start: ${settings.coldReps} rounds of node -e 0 / ours / the article's, fresh processes`)
result.coldStart = await benchColdStart({functionPath: join(root, 'dist/functions/fly-sync/index.js'), reps: settings.coldReps})

progress(`core through wasm: ${settings.wasmIterations} events, a warm process and a new one's first`)
const {benchCoreWasm} = await import('./core-wasm.mjs')
result.core.wasm = benchCoreWasm({iterations: settings.wasmIterations})

if (settings.native) {
  progress(`core natively: cargo bench --bench core (${settings.nativeIterations} events; builds the bench profile first if needed)`)
  const t = Date.now()
  const cargoBin = join(process.env.CARGO_HOME ?? join(process.env.HOME ?? '', '.cargo'), 'bin')
  const r = spawnSync('cargo', ['bench', '--quiet', '--bench', 'core', '--', '--iterations', String(settings.nativeIterations), '--json'], {
    cwd: root,
    encoding: 'utf8',
    env: {...process.env, PATH: `${cargoBin}:${process.env.PATH}`},
    timeout: 900_000,
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
  const world = (machines) =>
    h.startWorld({machines, seed: settings.seed, regions: settings.regions, maxUnavailable: settings.maxUnavailable, apiLatencyMs: settings.apiLatencyMs})
  const within = async (m, label, work) => {
    const w = await world(m)
    try {
      const t = Date.now()
      return {...(await work(w)), wallMs: Date.now() - t}
    } finally {
      await w.close()
    }
  }
  for (const m of settings.machines) {
    const row = {machines: m, floor: null, publish: {}, bursts: [], restartChange: {}}
    result.fleet.push(row)
    progress(`[1 fan-out] ${m} Machines, floor: ${settings.publishes} POSTs through the proxy, and as many to the farthest region`)
    row.floor = await within(m, 'floor', (w) => h.measureFloor(w, {count: settings.publishes}))
    for (const strategy of ['engine', 'engine-nodeps', 'engine-new', 'baseline']) {
      row.publish[strategy] = await within(m, strategy, (w) =>
        h.measurePublishes(w, strategy, {
          count: settings.publishes,
          limitMs: settings.limitMs,
          onProgress: (i) => progress(`[1 fan-out] ${m} Machines, ${strategy}: publish ${i + 1}/${settings.publishes}`),
        }),
      )
    }
    for (const n of settings.bursts) {
      const burst = {n, limitMs: settings.burstLimitMs}
      row.bursts.push(burst)
      for (const strategy of ['engine', 'baseline']) {
        progress(`[2 bursts] ${m} Machines, ${strategy}: ${n} publishes, ${settings.concurrency} in flight (limit ${settings.burstLimitMs / 1000} s)`)
        burst[strategy] = await within(m, strategy, (w) => h.measureBurst(w, strategy, {n, concurrency: settings.concurrency, limitMs: settings.burstLimitMs}))
      }
    }
    for (const strategy of ['engine', 'baseline']) {
      progress(`[3 restart] ${m} Machines, ${strategy}: a change whose type is read at boot`)
      row.restartChange[strategy] = await within(m, strategy, (w) => h.measureRestartChange(w, strategy, {limitMs: settings.rollLimitMs}))
    }
  }
}

// ---------- goals ----------

const KB = 1000
const goal = (id, text, target, figure, met) => result.goals.push({id, goal: text, target, figure, met})
const nearest = (n) => (result.fleet.length ? result.fleet.reduce((a, b) => (Math.abs(b.machines - n) < Math.abs(a.machines - n) ? b : a)) : null)
const pct = (x) => (x === null || x === undefined ? '-' : `${(x * 100).toFixed(1)}%`)
const secs = (x) => `${(x / 1000).toFixed(1)} s`

const size = result.wasmSize
goal('wasmSize', 'the Function\'s wasm module, raw / gzip -9', '≤ 200 / 80 KB', `${(size.raw / KB).toFixed(1)} / ${(size.gzip / KB).toFixed(1)} KB`, size.raw <= 200 * KB && size.gzip <= 80 * KB)
const cs = result.coldStart
goal('coldStart', 'cold start: import + first real call over `node -e 0` (median of paired runs)', '≤ +8 ms', `+${cs.overheadMs.toFixed(1)} ms`, cs.overheadMs <= 8)
goal('coldStartArticle', 'cold start: ours / the article\'s handler (median of per-round ratios)', '≤ 1.0×', `${cs.oursOverArticle.toFixed(2)}× (+${cs.overheadMs.toFixed(1)} vs +${cs.articleOverheadMs.toFixed(1)} ms)`, cs.oursOverArticle <= 1)
const nat = result.core.native
if (nat.usPerEvent !== undefined) {
  goal('coreNative', 'core per event natively, 24 Machines (warm process; a new process\'s first in brackets)', '≤ 40 µs', `${nat.usPerEvent.toFixed(1)} µs (${nat.firstEventUs.toFixed(1)})`, nat.usPerEvent <= 40)
} else {
  goal('coreNative', 'core per event natively, 24 Machines', '≤ 40 µs', `skipped (${nat.skipped})`, null)
}
const cw = result.core.wasm
goal('coreWasm', 'core per event through wasm, 24 Machines (warm process; a new process\'s first in brackets)', '≤ 100 µs', `${cw.usPerEvent.toFixed(1)} µs (${cw.firstEventUs.toFixed(1)})`, cw.usPerEvent <= 100)
for (const n of [24, 96]) {
  const row = result.fleet.find((r) => r.machines === n)
  if (!row) continue
  const e = row.publish.engine
  const far = row.floor.farthest
  const ratio = (x) => (x === null ? null : x / far.p50)
  const met = e.p50 !== null && e.p95 !== null && ratio(e.p50) <= 1.2 && e.p95 / far.p95 <= 1.2
  const figure = e.p50 === null ? 'not fresh' : `p50 ${ratio(e.p50).toFixed(2)}×, p95 ${(e.p95 / far.p95).toFixed(2)}× (${Math.round(e.p50)} / ${Math.round(e.p95)} ms vs ${Math.round(far.p50)} / ${Math.round(far.p95)} ms to ${far.region})`
  goal(`fanOut${n}`, `publish → fresh on every Machine vs one POST to the farthest region, ${n} Machines`, '≤ 1.2× (p50, p95)', figure, met)
}
const bursts = result.fleet.flatMap((r) => r.bursts.map((b) => ({machines: r.machines, n: b.n, ...b.engine})))
if (bursts.length) {
  const restarts = bursts.reduce((n, b) => n + b.restarts, 0)
  const served = Math.min(...bursts.map((b) => b.served))
  const unsettled = bursts.filter((b) => !b.settled).map((b) => `${b.machines}×${b.n}`)
  goal('bursts', 'content-only bursts: restarts, least share of reads served, every burst settled', '0, 100%, all', `${restarts}, ${pct(served)}, ${unsettled.length ? `cut: ${unsettled.join(' ')}` : 'all'}`, restarts === 0 && served === 1 && unsettled.length === 0)
}
const big = result.fleet.find((r) => r.machines === 96)?.bursts.find((b) => b.n === 200)?.engine
if (big) {
  goal('burst96x200', '96 Machines × 200 publishes: every Machine fresh, no restart, every read served', 'completes', big.settled ? `${secs(big.freshMs)}, ${big.restarts} restarts, ${pct(big.served)} served` : `cut after ${secs(big.notFreshAfterMs)} (${big.freshMachines}/${big.machines} fresh)`, big.settled && big.restarts === 0)
}
const roll = result.fleet.find((r) => r.machines === 96)?.restartChange.engine
if (roll) {
  const least = Math.min(...Object.values(roll.leastServingByRegion))
  const figure = `${roll.freshHealthyMs === null ? `not after ${secs(roll.ranMs)}` : secs(roll.freshHealthyMs)}, least serving per region ${pct(least)}`
  goal('restart96', `restart-type change, 96 Machines in 3 regions (maxUnavailable ${settings.maxUnavailable}): all back started, healthy and fresh; least share serving per region`, '≤ 10 s, ≥ 66.7%', figure, roll.freshHealthyMs !== null && roll.freshHealthyMs <= 10_000 && least >= 2 / 3 - 1e-9)
}

result.totalMs = Date.now() - started
result.host.loadavgEnd = loadavg()[0]
const outPath = resolve(flags.out)
mkdirSync(dirname(outPath), {recursive: true})
writeFileSync(outPath, `${JSON.stringify(result, null, 2)}\n`)
const htmlPath = outPath.replace(/\.json$/, '') + '.html'
writeFileSync(htmlPath, renderHtml(result))

// ---------- the table ----------

const ms = (x) => (x === null || x === undefined ? '-' : `${Math.round(x)}`)
const ratioOf = (a, b) => (a === null || b === null || !b ? '-' : `${(a / b).toFixed(2)}×`)
function table(headers, rows, left = 2) {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => String(r[i]).length)))
  const line = (cells) => cells.map((c, i) => (i < left || i === cells.length - 1 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  ').trimEnd()
  return [line(headers), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n')
}
const freshAfter = (r) => (r.freshMs !== null ? secs(r.freshMs) : `not fresh after ${secs(r.notFreshAfterMs)} (${r.freshMachines}/${r.machines})`)
const lat = Array.isArray(settings.apiLatencyMs) ? `${settings.apiLatencyMs[0]}–${settings.apiLatencyMs[1]}` : `${settings.apiLatencyMs}`
const STRATEGY = {engine: 'engine', 'engine-nodeps': 'engine, no dependents', 'engine-new': 'engine, new process', baseline: 'article'}

const out = []
const s = settings
out.push(`sanity-fly-sync bench — ${result.host.nproc} × ${cpuModel}, Node ${process.version}, load average ${result.host.loadavgStart.toFixed(2)} at start`)
if (s.fleet) {
  out.push(`Fleet: ${s.machines.join(' / ')} Machines over ${s.regions.join(', ')} (the local Fly: proxy latency ord 5, fra 40, nrt 80 ms; Fly's rate`)
  out.push(`limits, 1/s burst 3 per Machine and action, list per app). The Machines API and Sanity's API (the local Content Lake)`)
  out.push(`answer in ${lat} ms. Every Machine runs local/app.mjs with the reference receiver. One fresh fleet per measurement, seed ${s.seed}.`)
  out.push(`Engine: the real handler, maxUnavailable ${s.maxUnavailable}, dependents looked up (context.clientOptions as Sanity passes them);`)
  out.push(`"engine" is a process that has run before (it pushes to the Machines it knows while its list is in flight, once the`)
  out.push(`dependents are known); "engine, no dependents" the same with FLY_SYNC_DEPENDENTS_DEPTH=0 (no Sanity query before the push);`)
  out.push(`"engine, new process" every run a process's first. Article: bench/baseline.mjs (refetch with @sanity/client, one POST through`)
  out.push(`the proxy, then restart all Machines at once).`)
  out.push('')
  out.push(`1. publish → fresh on every Machine (${s.publishes} single-document publishes; floor: one signed POST through the proxy, which`)
  out.push(`   picks a Machine in the edge region; "far": the same POST pinned to a Machine in the farthest region)`)
  const pubRows = []
  for (const r of result.fleet) {
    pubRows.push([r.machines, 'floor', ms(r.floor.p50), ms(r.floor.p95), '-', '-', '-', '-', '-', `far (${r.floor.farthest.region}): ${ms(r.floor.farthest.p50)} / ${ms(r.floor.farthest.p95)} ms`])
    for (const k of ['engine', 'engine-nodeps', 'engine-new', 'baseline']) {
      const p = r.publish[k]
      pubRows.push([r.machines, STRATEGY[k], ms(p.p50), ms(p.p95), ratioOf(p.p50, r.floor.farthest.p50), p.restartsPerPublish, p.apiCallsPerPublish.toFixed(1), p.rateLimited, p.maxNotServing, p.allFresh ? '' : 'not all fresh'])
    }
  }
  out.push(table(['Machines', 'strategy', 'p50 ms', 'p95 ms', '×far p50', 'restarts/pub', 'API/pub', '429', 'most down', ''], pubRows))
  out.push('')
  out.push(`2. bursts of N content-only publishes (one invocation per document, ${s.concurrency} in flight; probes read every Machine every 100 ms)`)
  const burstRows = []
  for (const r of result.fleet) {
    for (const b of r.bursts) {
      for (const k of ['engine', 'baseline']) {
        const x = b[k]
        burstRows.push([r.machines, `${b.n} ${STRATEGY[k]}`, pct(x.served), `${x.probes.refused}/${x.probes.timeout}`, x.restarts, x.apiCalls, x.rateLimited, `${x.failedRuns}/${x.delivered}`, x.appRequests, x.maxNotServing, freshAfter(x) + (x.settled ? '' : ', cut')])
      }
    }
  }
  out.push(table(['Machines', 'N strategy', 'served', 'refused/t.o.', 'restarts', 'API', '429', 'failed/run', 'pushes', 'most down', 'every Machine fresh after'], burstRows))
  out.push(`   (served: probe reads answered; refused/t.o.: failed reads refused by a Machine not serving / timed out after 1 s, which on`)
  out.push(`   this one-process simulator means CPU saturation; failed/run: invocations that threw / invocations delivered; pushes:`)
  out.push(`   requests through the app URL; cut: stopped at the limit)`)
  out.push('')
  out.push(`3. restart-type change (siteSettings, read at boot: every Machine restarts; engine maxUnavailable ${s.maxUnavailable} of each region)`)
  const rollRows = []
  for (const r of result.fleet) {
    for (const k of ['engine', 'baseline']) {
      const x = r.restartChange[k]
      const least = Object.entries(x.leastServingByRegion).map(([region, share]) => `${region} ${pct(share)}`).join(', ')
      rollRows.push([r.machines, STRATEGY[k], x.freshHealthyMs !== null ? secs(x.freshHealthyMs) : `not after ${secs(x.ranMs)}`, least, x.maxNotServing, x.restarts, pct(x.served), x.apiCalls, x.rateLimited, x.failedRuns])
    }
  }
  out.push(table(['Machines', 'strategy', 'all healthy + fresh', 'least serving per region', 'most down', 'restarts', 'served', 'API', '429', 'failed runs'], rollRows, 2))
  out.push('')
}
out.push(`4. the Function itself`)
out.push(`   cold start (median of ${cs.reps} rounds of fresh processes; every HTTP request answered in process): node -e 0 ${cs.nodeMs.toFixed(1)} ms;`)
out.push(`     ours ${cs.oursMs.toFixed(1)} ms (+${cs.overheadMs.toFixed(1)}): import ${cs.inProcess.ours.importMs.toFixed(1)} ms, first call ${cs.inProcess.ours.firstCallMs.toFixed(1)} ms (bundle ${(cs.bundles.ours.bytes / KB).toFixed(0)} KB)`)
out.push(`     the article's ${cs.articleMs.toFixed(1)} ms (+${cs.articleOverheadMs.toFixed(1)}): import ${cs.inProcess.article.importMs.toFixed(1)} ms, first call ${cs.inProcess.article.firstCallMs.toFixed(1)} ms (bundle ${(cs.bundles.article.bytes / KB).toFixed(0)} KB)`)
out.push(`     ours / the article's, per round: ${cs.oursOverArticle.toFixed(2)}×`)
out.push(`   wasm: ${size.raw.toLocaleString('en')} bytes raw, ${size.gzip.toLocaleString('en')} bytes gzip -9 (${size.path}, the Function's module)`)
out.push(`   core per event, 24-Machine fan-out with canned answers (event + config, list, ${cw.requestsPerEvent - 1} pushes, acks, report):`)
out.push(`     through wasm ${cw.usPerEvent.toFixed(1)} µs in a warm process, ${cw.firstEventUs.toFixed(1)} µs a new process's first (${cw.iterations} events each)`)
if (nat.usPerEvent !== undefined) {
  const phases = (p) => Object.entries(p ?? {}).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')
  out.push(`     natively ${nat.usPerEvent.toFixed(1)} µs warm, ${nat.firstEventUs.toFixed(1)} µs first (${nat.iterations} events each, ${nat.profile}; ${secs(nat.wallMs)} with the build)`)
  out.push(`       µs by phase, warm: ${phases(nat.phasesUs)}; first: ${phases(nat.firstEventPhasesUs)}`)
} else {
  out.push(`     natively: skipped (${nat.skipped})`)
}
out.push('')
out.push('goals')
out.push(table(['goal', 'target', 'figure', 'met'], result.goals.map((g) => [g.goal, g.target, g.figure, g.met === null ? '-' : g.met ? 'met' : 'MISSED']), 4))
out.push('')
out.push(`JSON: ${outPath}`)
out.push(`HTML: ${htmlPath}`)
out.push(`total ${secs(result.totalMs)} (load average ${result.host.loadavgEnd.toFixed(2)} at the end)`)
console.log(out.join('\n'))
