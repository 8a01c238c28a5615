// The built package (npm run build) loads in Node the way the shim loads it — inlined bytes, initSync — and the
// boundary carries the engine's values as plain objects of the generated types.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {initSync, SyncEngine, version} from '../../pkg/sanity_fly_sync.js'
import wasmBase64 from '../../pkg/sanity_fly_sync_wasm.js'

initSync({module: Buffer.from(wasmBase64, 'base64')})

const env = {
  FLY_APP_NAME: 'web',
  FLY_API_TOKEN: 'FlyV1 fm2_secret_token_value',
  FLY_SYNC_SECRET: '0123456789abcdef-sync',
  FLY_API_URL: 'http://127.0.0.1:9',
  FLY_APP_URL: 'http://127.0.0.1:9',
}
// The handler's `event` crosses as JSON text (function.ts: `JSON.stringify(event)`).
const event = JSON.stringify({data: {_id: 'page-1', _type: 'page', _rev: 'r1', _updatedAt: '2026-11-27T10:00:00Z', op: 'update'}})

function cargoVersion() {
  const toml = readFileSync(new URL('../../Cargo.toml', import.meta.url), 'utf8')
  return toml.split(/^\[/m).find((s) => s.startsWith('package]')).match(/^version\s*=\s*"([^"]+)"/m)[1]
}

test('the inlined wasm is the built wasm and reports the crate version', () => {
  const file = readFileSync(new URL('../../pkg/sanity_fly_sync_bg.wasm', import.meta.url))
  assert.ok(Buffer.from(wasmBase64, 'base64').equals(file))
  assert.equal(version(), cargoVersion())
})

test('a Function event becomes a list request; answers and failures are fed back as plain values', () => {
  const engine = SyncEngine.fromFunctionEvent(env, event, "null", 1_800_000_000_000, 7)
  const first = engine.poll(1_800_000_000_000)
  assert.equal(first.type, 'send')
  assert.equal(first.requests.length, 1)
  const [list] = first.requests
  assert.equal(list.method, 'GET')
  assert.equal(list.url, 'http://127.0.0.1:9/v1/apps/web/machines')
  assert.deepEqual(list.headers, [['authorization', 'FlyV1 fm2_secret_token_value']])
  assert.equal(list.log.kind, 'list')
  assert.ok(!JSON.stringify(list.log).includes('fm2_secret'), 'the log description carries no token')

  engine.handleResponse(list.id, 200, [['content-type', 'application/json']], JSON.stringify([{id: 'm1', state: 'started', region: 'ord'}]), 1_800_000_000_010)
  const second = engine.poll(1_800_000_000_010)
  assert.equal(second.type, 'send')
  const [push] = second.requests
  assert.equal(push.log.kind, 'sync')
  assert.deepEqual(push.headers.find(([k]) => k === 'fly-force-instance-id'), ['fly-force-instance-id', 'm1'])
  assert.equal(JSON.parse(push.body).id, 'page-1')

  engine.handleFailure(push.id, true, 'TimeoutError', 1_800_000_005_010)
  // The Machine is read first (one stopped since the list needs no push) …
  const check = engine.poll(1_800_000_005_010)
  assert.equal(check.type, 'send')
  assert.deepEqual(check.requests.map((r) => [r.log.kind, r.method, r.url]), [['check', 'GET', 'http://127.0.0.1:9/v1/apps/web/machines/m1']])
  engine.handleResponse(check.requests[0].id, 200, [], JSON.stringify({id: 'm1', state: 'started', region: 'ord'}), 1_800_000_005_020)
  // … and, still started, the push is retried after a backoff.
  const third = engine.poll(1_800_000_005_020)
  assert.equal(third.type, 'wait', 'a timeout is retried after a backoff')
  assert.ok(third.untilMs > 1_800_000_005_020)
})

test('bad input crosses as a Rejection object naming the field', () => {
  assert.throws(
    () => SyncEngine.fromFunctionEvent(env, JSON.stringify({data: {_id: 42}}), "null", 1_800_000_000_000, 7),
    (e) => e.stage === 'input' && e.class === 'bad_input' && e.field === 'event.data._id' && e.httpStatus === 400 && /expected the document id/.test(e.message),
  )
  assert.throws(
    () => SyncEngine.fromFunctionEvent({...env, FLY_SYNC_SECRET: 'short'}, event, "null", 1_800_000_000_000, 7),
    (e) => e.stage === 'config' && e.field === 'FLY_SYNC_SECRET' && e.httpStatus === 500 && !e.message.includes('short'),
  )
})
