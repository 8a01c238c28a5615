// The real engine (the built wasm module, as wasm.ts loads it) against the local Fly: its Machines API requests pass the emulator's
// OpenAPI validation, its pushes reach every Machine through the proxy, and a rolling restart keeps to
// max_unavailable, leases and releases every Machine, and copes with an ambiguous 408 and a 429.
import {test} from 'node:test'
import assert from 'node:assert/strict'

import {loadWasm, SyncEngine} from '../../wasm.ts'
import {DEFAULT_TOKEN} from '../../local/fly/machines-api.mjs'
import {startFleet} from '../../local/fly/fleet.mjs'

loadWasm()

const SECRET = 'local-fly-sync-secret-0123456789'

/** A minimal receiver: acks with its own Machine id and remembers what it got. */
function receiver(received) {
  return (machine) => async (request) => {
    if (new URL(request.url).pathname !== '/internal/content-sync') return new Response('not found', {status: 404})
    assert.ok(request.headers.get('sanity-fly-sync-signature'), 'signed')
    const body = await request.json()
    received.push({machine: machine.id, boot: machine.boot, id: body.id})
    return Response.json({protocol: 'sanity-fly-sync/1', machine: machine.env.FLY_MACHINE_ID, status: 'applied', restart: null})
  }
}

/** The shim's loop (function.ts runEngine), in plain JS: each batch's requests in parallel, waits, every answer fed back. */
async function runEngine(engine) {
  const inFlight = new Map()
  const ready = []
  for (;;) {
    for (const feed of ready.splice(0)) feed()
    const action = engine.poll(Date.now())
    if (action.type === 'done') return action.report
    if (action.type === 'send') {
      for (const batch of action.batches) {
        const body = batch.body === null ? undefined : engine.body(batch.body)
        batch.ids.forEach((id, i) => {
          const headers = batch.vary ? [...batch.headers, [batch.vary.name, batch.vary.values[i]]] : batch.headers
          const done = (async () => {
            try {
              const r = await fetch(batch.url, {method: batch.method, headers, body, signal: AbortSignal.timeout(batch.timeoutMs)})
              const answer = new Uint8Array(await r.arrayBuffer())
              const answerHeaders = [...r.headers]
              ready.push(() => engine.handleResponse(id, r.status, answerHeaders, answer, Date.now()))
            } catch (e) {
              ready.push(() => engine.handleFailure(id, e.name === 'TimeoutError', `${e.name}: ${e.message}`, Date.now()))
            }
            inFlight.delete(id)
          })()
          inFlight.set(id, done)
        })
      }
      continue
    }
    let timer
    await Promise.race([new Promise((r) => (timer = setTimeout(r, Math.max(0, action.untilMs - Date.now())))), ...inFlight.values()])
    clearTimeout(timer)
  }
}

function envFor(fleet, extra = {}) {
  return {
    FLY_APP_NAME: 'web',
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SECRET,
    FLY_API_URL: fleet.api.url,
    FLY_APP_URL: fleet.url,
    FLY_SYNC_BUDGET_MS: '20000',
    ...extra,
  }
}

// The handler's `event` as the shim hands it to the core (JSON text), published just now: a change whose type
// needs a restart is owed by the Machines started before it.
const event = (type) => JSON.stringify({data: {_id: `${type}-1`, _type: type, _rev: 'r1', _updatedAt: new Date().toISOString(), op: 'update', slug: 'hello'}})

test('engine → local Fly: every started Machine gets the push through the proxy; every API request validates', async () => {
  const received = []
  const fleet = await startFleet({
    machines: [{region: 'ord'}, {region: 'fra'}, {region: 'nrt'}, {region: 'nrt', state: 'stopped'}],
    latencyMs: {ord: 2, fra: 10, nrt: 20},
    handlerFor: receiver(received),
  })
  try {
    const report = await runEngine(SyncEngine.fromFunctionEvent(envFor(fleet), event("article"), "null", Date.now(), 7))
    assert.equal(report.status, 'ok', JSON.stringify(report))
    const [target] = report.targets
    const started = fleet.machines().filter((m) => m.state === 'started')
    assert.deepEqual(target.machines.filter((m) => m.sync === 'synced').map((m) => m.id).sort(), started.map((m) => m.id).sort())
    assert.deepEqual(received.map((r) => r.machine).sort(), started.map((m) => m.id).sort())
    assert.equal(target.machines.find((m) => m.state === 'stopped').skipCode, 'stopped')
    assert.deepEqual(fleet.api.log.map((e) => [e.action, e.status]), [['list', 200]])
    assert.deepEqual(
      fleet.log.map((e) => e.forced).sort(),
      started.map((m) => m.id).sort(),
      'one forced push per started Machine',
    )
  } finally {
    await fleet.close()
  }
})

test('engine → local Fly: a rolling restart leases, restarts max_unavailable at a time, waits for checks, releases', async () => {
  const received = []
  const fleet = await startFleet({
    // Three in ord (two of them may be down at once, one keeps serving), fra's only Machine goes on its own.
    machines: [{region: 'ord'}, {region: 'ord'}, {region: 'ord'}, {region: 'fra'}],
    latencyMs: {ord: 2, fra: 10},
    handlerFor: receiver(received),
    apiOptions: {timings: {stopMs: [40, 80], startMs: [80, 160], checksCriticalMs: 150}},
  })
  try {
    const api = fleet.api
    const ids = fleet.machines().map((m) => m.id)
    api.faults.ambiguousRestart(ids[0]) // the restart happens, the answer is a 408
    api.faults.rateLimit('lease', {machine: ids[1], retryAfter: 1})
    const t0 = api.clock.now()
    const report = await runEngine(
      SyncEngine.fromFunctionEvent(envFor(fleet, {FLY_RESTART_TYPES: 'siteSettings', FLY_MAX_UNAVAILABLE: '2'}), event("siteSettings"), "null", Date.now(), 7),
    )
    assert.equal(report.status, 'ok', JSON.stringify(report, null, 1))
    const [target] = report.targets
    assert.equal(target.restart.restarted, 4)
    assert.ok(target.restart.maxDown <= 2)
    assert.deepEqual(target.restart.unreleasedLeases, [])

    for (const id of ids) {
      assert.equal(api.machine(id).counts.restarts, 1, `Machine ${id} restarted exactly once (even after the ambiguous 408)`)
      assert.equal(api.machine(id).lease, null, 'released')
      assert.equal(fleet.machine(id).boots, 2)
    }
    // Never more than two Machines down at once, by the emulator's own timeline.
    const down = new Set()
    let maxDown = 0
    for (const e of api.stateLog.filter((e) => e.at >= t0)) {
      if (e.state === 'started' && e.checks === 'passing') down.delete(e.machine)
      else down.add(e.machine)
      maxDown = Math.max(maxDown, down.size)
    }
    assert.equal(maxDown, 2)
    const statuses = api.log.map((e) => e.status)
    assert.ok(!statuses.includes(400), 'every request the engine sent validated against the spec')
    assert.deepEqual(api.log.filter((e) => e.status >= 400).map((e) => `${e.action}:${e.status}`).sort(), ['lease:429', 'restart:408'])
    assert.equal(target.requests.rateLimited, 1)
    const actions = new Set(api.log.map((e) => e.action))
    assert.deepEqual([...actions].sort(), ['get', 'lease', 'list', 'metadata_set', 'release', 'restart', 'wait'])
    // The restart each Machine owed was recorded on it first, and is recorded done now.
    for (const id of ids) assert.match(api.machine(id).metadata.sanity_fly_sync_restart, /^1;done;siteSettings-1@r1;\d+$/)
  } finally {
    await fleet.close()
  }
})
