// Core cost per event through the wasm boundary: the same work as benches/core.rs (bench/fixtures/core-case.json:
// a Function event, the configuration, a 24-Machine list, one ack per Machine), driven through `SyncEngine` the way
// function.ts drives it — poll → answer every request of every batch at once with the canned answer (as bytes, as
// `fetch` hands them over) → poll … → done — with no network and no timers. The environment is the real
// handler's: this process's variables with the case's set, filtered as function.ts filters them (`FLY_*`,
// `SANITY_*`). What it measures beyond the native figure is the boundary (the event, env and answers crossing as
// bytes, the actions and the report as JSON text) and the wasm code itself.
//
// Two figures, as natively: a warm process (the module remembers the configuration and the Machine list between
// runs; the list answer, unchanged, is not read again) and a process's first event (`forgetRuns` before each).
import {readFileSync} from 'node:fs'
import {coreEnv} from '../function.ts'
import {forgetRuns, loadWasm, SyncEngine} from '../wasm.ts'

const HEADERS = [['content-type', 'application/json; charset=utf-8']]
const utf8 = new TextEncoder()

export function loadCoreCase() {
  const c = JSON.parse(readFileSync(new URL('./fixtures/core-case.json', import.meta.url), 'utf8'))
  const machines = JSON.parse(c.listBody)
  const acks = new Map(machines.map((m) => [m.id, utf8.encode(JSON.stringify({protocol: 'sanity-fly-sync/1', machine: m.id, status: 'applied', restart: null}))]))
  return {...c, env: coreEnv({...process.env, ...c.env}), list: utf8.encode(c.listBody), machines: machines.length, acks}
}

/** One event, start to report; returns the number of requests answered. */
function oneEvent(c, seed) {
  const engine = SyncEngine.fromFunctionEvent(c.env, JSON.stringify(c.event), 'null', c.nowMs, seed)
  let answered = 0
  try {
    for (;;) {
      const action = engine.poll(c.nowMs)
      if (action.type === 'done') {
        if (!action.report.ok) throw new Error(`the canned run ended ${action.report.status}`)
        return answered
      }
      if (action.type !== 'send') throw new Error('every request is answered at once: nothing to wait for')
      for (const batch of action.batches) {
        if (batch.body !== null) engine.body(batch.body) // what the shim takes before it sends
        batch.ids.forEach((id, i) => {
          const body = batch.log.kind === 'list' ? c.list : c.acks.get(batch.vary?.values[i] ?? batch.log.machine)
          if (body === undefined) throw new Error(`unexpected ${batch.log.kind} request in a content-only run`)
          engine.handleResponse(id, 200, HEADERS, body, c.nowMs)
          answered++
        })
      }
    }
  } finally {
    engine.free()
  }
}

function measure(c, iterations, warm) {
  const each = warm ? () => {} : forgetRuns
  for (let i = 0; i < Math.max(1, Math.floor(iterations / 10)); i++) {
    each()
    oneEvent(c, i)
  }
  let ns = 0
  for (let i = 0; i < iterations; i++) {
    each()
    const started = process.hrtime.bigint()
    oneEvent(c, i)
    ns += Number(process.hrtime.bigint() - started)
  }
  return ns / 1e3 / iterations
}

/** @param {{iterations?: number}} [o] */
export function benchCoreWasm({iterations = 2_000} = {}) {
  loadWasm()
  const c = loadCoreCase()
  forgetRuns()
  const requests = oneEvent(c, 1)
  const firstEventUs = measure(c, iterations, false)
  forgetRuns()
  const usPerEvent = measure(c, iterations, true)
  return {usPerEvent, firstEventUs, iterations, machines: c.machines, requestsPerEvent: requests, envVars: Object.keys(c.env).length}
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const iterations = Number(process.argv[2] ?? 2_000)
  console.log(JSON.stringify({bench: 'core-wasm', ...benchCoreWasm({iterations})}))
}
