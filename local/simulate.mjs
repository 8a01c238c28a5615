// npm run simulate [-- --scenario file.json --machines 24 --regions ord,fra,nrt --faults none --json]
// Starts the local Fly (Machines API emulator + a fleet running the reference receiver), replays an editorial
// session through the real Function handler, prints a table per event, writes an HTML timeline, shuts down.
// npm run simulate -- --app next [--machines 3]: the Next.js example instead, each Machine a `next start` process
// (local/next-app.mjs), read back as rendered HTML.
import {readFileSync, mkdirSync, writeFileSync} from 'node:fs'
import {dirname, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'
import {parseArgs} from 'node:util'
import {runSimulation} from './simulation.mjs'
import {FAULT_PROFILES} from './faults.mjs'
import {renderTimeline} from './timeline.mjs'
import {runNextScenario} from './next-app.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const {values: flags} = parseArgs({
  options: {
    app: {type: 'string', default: 'demo'},
    scenario: {type: 'string', default: join(root, 'local/scenarios/editorial.json')},
    machines: {type: 'string'},
    regions: {type: 'string', default: 'ord,fra,nrt'},
    faults: {type: 'string', default: 'none'},
    out: {type: 'string', default: join(root, 'out/simulation-timeline.html')},
    json: {type: 'boolean', default: false},
    help: {type: 'boolean', default: false},
  },
})

if (flags.help) {
  console.log(`usage: npm run simulate -- [--app demo|next] [--scenario FILE] [--machines N] [--regions a,b] [--faults ${Object.keys(FAULT_PROFILES).join('|')}] [--out FILE] [--json]`)
  console.log('  --app next: the Next.js example (examples/next-app), each Machine a `next start` process; default 3 Machines')
  for (const [name, p] of Object.entries(FAULT_PROFILES)) console.log(`  --faults ${name}: ${p.description}`)
  process.exit(0)
}
if (!['demo', 'next'].includes(flags.app)) {
  console.error('--app: expected `demo` (the in-process demo app) or `next` (the Next.js example)')
  process.exit(2)
}
const machines = Number(flags.machines ?? (flags.app === 'next' ? 3 : 24))
const most = flags.app === 'next' ? 8 : 200 // each Next.js Machine is a process of its own
if (!Number.isInteger(machines) || machines < 1 || machines > most) {
  console.error(`--machines: expected a whole number from 1 to ${most}`)
  process.exit(2)
}
const regions = flags.regions.split(',').map((r) => r.trim()).filter(Boolean)
if (regions.length === 0 || regions.some((r) => !/^[a-z]{3}$/.test(r))) {
  console.error('--regions: expected Fly region codes such as ord,fra,nrt')
  process.exit(2)
}
if (!FAULT_PROFILES[flags.faults]) {
  console.error(`--faults: expected one of ${Object.keys(FAULT_PROFILES).join(', ')}`)
  process.exit(2)
}
let scenario
try {
  scenario = JSON.parse(readFileSync(resolve(flags.scenario), 'utf8'))
} catch (error) {
  console.error(`--scenario: could not read ${flags.scenario}: ${error.message}`)
  process.exit(2)
}

const pad = (v, n) => String(v).padEnd(n)
const lpad = (v, n) => String(v).padStart(n)
if (flags.app === 'next') await simulateNext()
const header =
  `${pad('#', 3)}${pad('event', 30)}${lpad('runs', 5)}${lpad('pushes', 7)}${lpad('fresh', 7)}${lpad('p50', 7)}${lpad('max', 7)}${lpad('deps', 6)}` +
  `${lpad('caught up', 10)}${lpad('stale ms', 9)}${lpad('restarts', 9)}${lpad('served', 8)}${lpad('API', 5)}${lpad('429', 5)}  ok`
if (!flags.json) {
  console.log(`simulating ${machines} Machines over ${regions.join(', ')}, faults: ${flags.faults}; reconciliation every ${scenario.catchUpSeconds ?? 2} s\n`)
  console.log(header)
  console.log('-'.repeat(header.length))
}
const ms = (v) => (v === null || v === undefined ? '-' : v)
const result = await runSimulation({
  scenario,
  machines,
  regions,
  faults: flags.faults,
  onStep: flags.json
    ? undefined
    : (s) => {
        console.log(
          `${pad(s.index, 3)}${pad(s.label.slice(0, 29), 30)}${lpad(s.invocations, 5)}${lpad(s.pushes, 7)}${lpad(`${s.freshMachines}/${s.servingMachines}`, 7)}` +
            `${lpad(ms(s.freshP50), 7)}${lpad(ms(s.freshMax), 7)}${lpad(s.dependents.checks ? `${s.dependents.freshByPush}/${s.dependents.checks}` : '-', 6)}${lpad(s.caughtUp.length, 10)}${lpad(ms(s.maxStaleMs), 9)}${lpad(s.restarts, 9)}` +
            `${lpad(`${(s.availability * 100).toFixed(1)}%`, 8)}${lpad(s.apiCalls, 5)}${lpad(s.rateLimited, 5)}  ${s.ok ? 'yes' : 'NO'}`,
        )
        if (s.caughtUp.length > 3) {
          const stale = s.caughtUp.map((c) => c.staleMs)
          console.log(`     caught up: ${s.caughtUp.length} Machines, stale ${Math.min(...stale)}–${Math.max(...stale)} ms — e.g. ${s.caughtUp[0].cause.slice(0, 100)}`)
        } else {
          for (const c of s.caughtUp) console.log(`     caught up: ${c.machine} (${c.region}) stale ${c.staleMs} ms — ${c.cause.slice(0, 110)}`)
        }
        if (s.dependents.checks) {
          const d = s.dependents
          console.log(`     pages showing it (dependents): ${d.pages.join(' ')} — fresh by push on ${d.freshByPush} of ${d.checks} (Machine, page)${d.freshOtherwise ? `, ${d.freshOtherwise} otherwise` : ''}`)
        }
        for (const run of s.syncTagRuns) {
          const after = run.doneAt !== null && run.lastAnswerAt !== null ? `${Math.round(run.doneAt - run.lastAnswerAt)} ms after the last answer` : 'no answer'
          console.log(`     sync-tag run: ${run.tags} tag(s), ${run.answers} Machine(s) answered; done called ${run.doneCalls}×, ${after}${run.error ? ' (run partial)' : ''}`)
        }
        if (s.live) {
          const l = s.live
          console.log(`     live pages (cached under sync tags): fresh by tags on ${l.freshByTags} of ${l.checks - l.unchanged} that changed; ${l.unchanged} unchanged (${l.droppedUnchanged} dropped anyway: the lake's tags are coarse)`)
          for (const st of l.stale) console.log(`     LIVE STALE: ${st.machine} ${st.path}${st.why ? ` — report: ${st.why.slice(0, 100)}` : ''}`)
        }
        if (s.away.length) console.log(`     away (cut off or suspended), checked when back: ${s.away.join(', ')}`)
        if (s.killedRuns) console.log(`     run killed at ${s.killedAt - s.startedAt} ms (its timeout); its roll left recorded on the Machines: ${s.leftByKill.length ? `${s.leftByKill.join(', ')} checked after the next run` : 'nothing left'}`)
        if (s.continuations) console.log(`     ${s.continuations} resume run(s) the runs handed their rolls to`)
        for (const st of s.stale) console.log(`     STALE: ${st.machine} (${st.region}) ${st.id}: expected ${st.expected}${st.why ? ` — report: ${st.why}` : ''}`)
      },
})

mkdirSync(dirname(resolve(flags.out)), {recursive: true})
writeFileSync(resolve(flags.out), renderTimeline(result))
if (flags.json) {
  const {timelines, availability, apiLog, ...rest} = result
  console.log(JSON.stringify({...rest, timeline: resolve(flags.out)}, null, 2))
} else {
  const verdict = !result.ok
    ? 'some Machines still stale after one reconciliation interval plus one query (see above): FAILED'
    : result.caughtUp
      ? `every started Machine fresh after every event; ${result.caughtUp} times a lost push was caught up by reconciliation`
      : 'every started Machine fresh after every event'
  console.log(`\n${verdict}`)
  console.log(`timeline: ${resolve(flags.out)}`)
}
process.exit(result.ok ? 0 : 1)

/** `--app next`: publish, rename, sync tags and delete through the Functions to a Next.js app on every Machine. */
async function simulateNext() {
  if (flags.faults !== 'none') {
    console.error('--faults: the Next.js run has none (use the demo app)')
    process.exit(2)
  }
  if (!flags.json) console.log(`Next.js example on ${machines} Machines over ${regions.join(', ')}: each a \`next start\` process with its own copy of the build\n`)
  let n = 0
  const line = `${pad('#', 3)}${pad('step', 38)}${lpad('pushed', 8)}${lpad('fresh', 7)}${lpad('ms', 6)}${lpad('restarts', 9)}  ok`
  if (!flags.json) console.log(`${line}\n${'-'.repeat(line.length)}`)
  const result = await runNextScenario({
    machines,
    regions,
    log: (l) => flags.json || console.log(l),
    onStep: (s) => {
      if (flags.json) return
      const i = s
      const pushed = i.via === 'function' || i.via === 'sync-tags'
      console.log(`${pad(++n, 3)}${pad(i.label, 38)}${lpad(pushed ? `${i.synced}/${machines}` : '-', 8)}${lpad(`${i.fresh}/${machines}`, 7)}${lpad(i.via === 'function' ? i.durationMs : '-', 6)}${lpad(i.restarts, 9)}  ${i.ok ? 'yes' : 'NO'}`)
      for (const m of i.machines) for (const p of m.problems) console.log(`     ${m.id} (${m.region}): ${p}`)
    },
  })
  if (flags.json) console.log(JSON.stringify(result, null, 2))
  else {
    console.log(`\nnext build: ${result.built ? `${result.buildMs} ms` : 'unchanged, reused'}; ${machines} Machines serving after ${result.bootMs} ms; package tarball ${result.tarballBytes} bytes`)
    console.log(result.ok ? 'every Machine rendered every change on its first read after the push, without a restart' : 'some Machine rendered stale content (see above): FAILED')
  }
  process.exit(result.ok ? 0 : 1)
}
