// Core cost per event through the wasm boundary: the same work as benches/core.rs (bench/fixtures/core-case.json:
// a Function event, the configuration, a 24-Machine list, one ack per Machine), driven through `SyncEngine` the way
// function.ts drives it — poll → answer every request at once with the canned response → poll … → done — with no
// network and no timers. What it measures beyond the native figure is the boundary: the event crossing as JSON text
// (`JSON.stringify`, as function.ts does), env, requests and the report as JS objects (serde-wasm-bindgen), and
// the wasm code itself.
import {readFileSync} from 'node:fs'
import {loadWasm, SyncEngine} from '../wasm.ts'

const HEADERS = [['content-type', 'application/json; charset=utf-8']]

export function loadCoreCase() {
  const c = JSON.parse(readFileSync(new URL('./fixtures/core-case.json', import.meta.url), 'utf8'))
  const machines = JSON.parse(c.listBody)
  const acks = new Map(machines.map((m) => [m.id, JSON.stringify({protocol: 'sanity-fly-sync/1', machine: m.id, status: 'applied', restart: null})]))
  return {...c, machines: machines.length, acks}
}

/** One event, start to report; returns the number of requests answered. */
function oneEvent(c, seed) {
  const engine = SyncEngine.fromFunctionEvent(c.env, JSON.stringify(c.event), "null", c.nowMs, seed)
  let answered = 0
  try {
    for (;;) {
      const action = engine.poll(c.nowMs)
      if (action.type === 'done') {
        if (!action.report.ok) throw new Error(`the canned run ended ${action.report.status}`)
        return answered
      }
      if (action.type !== 'send') throw new Error('every request is answered at once: nothing to wait for')
      for (const r of action.requests) {
        const body = r.log.kind === 'list' ? c.listBody : c.acks.get(r.log.machine)
        if (body === undefined) throw new Error(`unexpected ${r.log.kind} request in a content-only run`)
        engine.handleResponse(r.id, 200, HEADERS, body, c.nowMs)
        answered++
      }
    }
  } finally {
    engine.free()
  }
}

/** @param {{iterations?: number}} [o] */
export function benchCoreWasm({iterations = 2_000} = {}) {
  loadWasm()
  const c = loadCoreCase()
  const requests = oneEvent(c, 1)
  for (let i = 0; i < Math.max(1, Math.floor(iterations / 10)); i++) oneEvent(c, i)
  const started = process.hrtime.bigint()
  for (let i = 0; i < iterations; i++) oneEvent(c, i)
  const ns = Number(process.hrtime.bigint() - started)
  return {usPerEvent: ns / 1e3 / iterations, iterations, machines: c.machines, requestsPerEvent: requests}
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const iterations = Number(process.argv[2] ?? 2_000)
  console.log(JSON.stringify({bench: 'core-wasm', ...benchCoreWasm({iterations})}))
}
