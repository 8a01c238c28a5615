// The built package (npm run build) loads in Node the way the shim loads it — inlined bytes, initSync — and the
// boundary carries the engine's values as bytes: JSON text of the generated types. Each side has a module of its own:
// the Function's carries no receiver, the receiver's no engine and no Machines API.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'

import {headersRead, initSync, SyncEngine, version} from '../../pkg/sanity_fly_sync.js'
import wasmBase64 from '../../pkg/sanity_fly_sync_wasm.js'
import * as receiverModule from '../../pkg/sanity_fly_sync_receiver.js'
import receiverBase64 from '../../pkg/sanity_fly_sync_receiver_wasm.js'

initSync({module: Buffer.from(wasmBase64, 'base64')})

const env = JSON.stringify({
  FLY_APP_NAME: 'web',
  FLY_API_TOKEN: 'FlyV1 fm2_secret_token_value',
  FLY_SYNC_SECRET: '0123456789abcdef-sync',
  FLY_API_URL: 'http://127.0.0.1:9',
  FLY_APP_URL: 'http://127.0.0.1:9',
})
// The handler's `event` crosses as JSON text (function.ts: `JSON.stringify(event)`), as UTF-8 bytes.
const event = JSON.stringify({data: {_id: 'page-1', _type: 'page', _rev: 'r1', _updatedAt: '2026-11-27T10:00:00Z', op: 'update'}})
const bytes = (text) => new TextEncoder().encode(text)

function cargoVersion() {
  const toml = readFileSync(new URL('../../Cargo.toml', import.meta.url), 'utf8')
  return toml.split(/^\[/m).find((s) => s.startsWith('package]')).match(/^version\s*=\s*"([^"]+)"/m)[1]
}

test('the inlined wasm is the built wasm and reports the crate version', () => {
  const file = readFileSync(new URL('../../pkg/sanity_fly_sync_bg.wasm', import.meta.url))
  assert.ok(Buffer.from(wasmBase64, 'base64').equals(file))
  assert.equal(version(), cargoVersion())
})

test('each side has its own module: the Function\'s carries no receiver, the receiver\'s no engine and no Machines API', () => {
  const fn = readFileSync(new URL('../../pkg/sanity_fly_sync_bg.wasm', import.meta.url))
  const rx = readFileSync(new URL('../../pkg/sanity_fly_sync_receiver_bg.wasm', import.meta.url))
  assert.ok(Buffer.from(receiverBase64, 'base64').equals(rx), 'the inlined receiver wasm is the built one')
  const exports = (bytes) => WebAssembly.Module.exports(new WebAssembly.Module(bytes)).map((e) => e.name)
  assert.ok(exports(fn).some((n) => n.startsWith('syncengine_')), 'the Function\'s module has the engine')
  assert.deepEqual(exports(fn).filter((n) => /receiverdriver|runtasks/i.test(n)), [], 'and nothing of the receiver')
  assert.ok(exports(rx).some((n) => n.startsWith('receiverdriver_')), 'the receiver\'s module has the receiver')
  assert.deepEqual(exports(rx).filter((n) => n.startsWith('syncengine_')), [], 'and no engine')
  // Text only code of one side carries: the Machines API's paths and headers, the configuration, the catch-up.
  const has = (bytes, text) => bytes.includes(Buffer.from(text))
  for (const text of ['/v1/apps/', 'fly-force-instance-id', 'FLY_SYNC_CONFIG']) {
    assert.ok(has(fn, text), `the Function's module has ${text}`)
    assert.ok(!has(rx, text), `the receiver's module has no ${text}`)
  }
  for (const text of ['maxBodyBytes', 'no catch-up run']) {
    assert.ok(has(rx, text), `the receiver's module has ${text}`)
    assert.ok(!has(fn, text), `the Function's module has no ${text}`)
  }
  receiverModule.initSync({module: rx})
  assert.equal(receiverModule.version(), cargoVersion())
})

test('a Function event becomes a list request; answers and failures are fed back as bytes; a fan-out is one batch', () => {
  const engine = SyncEngine.fromFunctionEvent(bytes(env), bytes(event), bytes('null'), 1_800_000_000_000, 7)
  const poll = (now) => JSON.parse(engine.poll(now))
  const first = poll(1_800_000_000_000)
  assert.equal(first.type, 'send')
  assert.equal(first.batches.length, 1)
  const [list] = first.batches
  assert.equal(list.ids.length, 1)
  assert.equal(list.method, 'GET')
  assert.equal(list.url, 'http://127.0.0.1:9/v1/apps/web/machines')
  assert.deepEqual(list.headers, [['authorization', 'FlyV1 fm2_secret_token_value']])
  assert.equal(list.body, null)
  assert.equal(list.log.kind, 'list')
  assert.ok(!JSON.stringify(list.log).includes('fm2_secret'), 'the log description carries no token')

  const machines = [{id: 'm1', state: 'started', region: 'ord'}, {id: 'm2', state: 'started', region: 'fra'}]
  engine.handleResponse(list.ids[0], 200, 'content-type:application/json\n', bytes(JSON.stringify(machines)), 1_800_000_000_010)
  const second = poll(1_800_000_000_010)
  assert.equal(second.type, 'send')
  assert.equal(second.batches.length, 1, 'the pushes are one batch')
  const [push] = second.batches
  assert.equal(push.log.kind, 'sync')
  assert.deepEqual(push.vary, {name: 'fly-force-instance-id', values: ['m2', 'm1']})
  assert.equal(push.ids.length, 2)
  assert.ok(!push.headers.some(([k]) => k === 'fly-force-instance-id'))
  assert.equal(JSON.parse(new TextDecoder().decode(engine.body(push.body))).id, 'page-1')
  assert.equal(engine.body(99).length, 0, 'a body it did not name is empty')

  const ack = (m) => bytes(JSON.stringify({machine: m, status: 'applied'}))
  engine.handleResponse(push.ids[0], 200, '', ack('m2'), 1_800_000_000_020)
  engine.handleFailure(push.ids[1], true, 'TimeoutError', 1_800_000_005_010)
  // The Machine is read first (one stopped since the list needs no push) …
  const check = poll(1_800_000_005_010)
  assert.equal(check.type, 'send')
  assert.deepEqual(check.batches.map((b) => [b.log.kind, b.method, b.url]), [['check', 'GET', 'http://127.0.0.1:9/v1/apps/web/machines/m1']])
  engine.handleResponse(check.batches[0].ids[0], 200, '', bytes(JSON.stringify({id: 'm1', state: 'started', region: 'ord'})), 1_800_000_005_020)
  // … and, still started, the push is retried after a backoff.
  const third = poll(1_800_000_005_020)
  assert.equal(third.type, 'wait', 'a timeout is retried after a backoff')
  assert.ok(third.untilMs > 1_800_000_005_020)
})

test('the answer headers the core reads are the only ones handed over, and a Retry-After reaches it', () => {
  assert.deepEqual(headersRead().split(','), ['retry-after'])
  const engine = SyncEngine.fromFunctionEvent(bytes(env), bytes(event), bytes('null'), 1_800_000_000_000, 7)
  const [list] = JSON.parse(engine.poll(1_800_000_000_000)).batches
  engine.handleResponse(list.ids[0], 429, 'retry-after:10\n', bytes('{"error":"rate limited"}'), 1_800_000_000_010)
  const wait = JSON.parse(engine.poll(1_800_000_000_010))
  assert.equal(wait.type, 'wait')
  assert.ok(wait.untilMs >= 1_800_000_010_010, `the list waits out Retry-After: ${wait.untilMs - 1_800_000_000_010} ms`)
})

test('bad input crosses as a Rejection (JSON text) naming the field', () => {
  const rejection = (work) => {
    try {
      work()
    } catch (thrown) {
      assert.equal(typeof thrown, 'string')
      return JSON.parse(thrown)
    }
    assert.fail('not refused')
  }
  const input = rejection(() => SyncEngine.fromFunctionEvent(bytes(env), bytes(JSON.stringify({data: {_id: 42}})), bytes('null'), 1_800_000_000_000, 7))
  assert.deepEqual([input.stage, input.class, input.field, input.httpStatus], ['input', 'bad_input', 'event.data._id', 400])
  assert.match(input.message, /expected the document id/)
  const config = rejection(() => SyncEngine.fromFunctionEvent(bytes(JSON.stringify({...JSON.parse(env), FLY_SYNC_SECRET: 'short'})), bytes(event), bytes('null'), 1_800_000_000_000, 7))
  assert.deepEqual([config.stage, config.field, config.httpStatus], ['config', 'FLY_SYNC_SECRET', 500])
  assert.ok(!config.message.includes('short'))
})
