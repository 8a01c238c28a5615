// Values crossing between JavaScript and the receiver's wasm core (issue: trust, "values crossing into wasm"):
// deep nesting is a clear refusal, never a trap; integers beyond 2^53 reach the app's hooks exactly; a `__proto__`
// key stays an ordinary key; a refused input records nothing; and a trap inside the core leaves the receiver
// usable: the module is replaced and the next call works.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {createServer} from 'node:http'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createReceiver} from '../../receiver/index.ts'
import {SyncReceiver, wasmGeneration} from '../../receiver/wasm.ts'
import {initSync} from '../../pkg/sanity_fly_sync_receiver.js'

const secret = '0123456789abcdef-boundary'
const NOW = () => new Date(Date.now() - 60_000).toISOString()

/** A payload as raw JSON text, so numbers and keys are exactly what the test writes. */
function body({id = 'page-1', rev = 'r1', updatedAt = NOW(), document = '{"_id":"page-1","title":"T"}'} = {}) {
  return `{"protocol":"sanity-fly-sync/1","target":"web","op":"upsert","operation":"update","id":"${id}","type":"page",` +
    `"rev":"${rev}","updatedAt":"${updatedAt}","slug":null,"previousSlug":null,"routes":{"invalidate":[],"current":[],"previous":[]},` +
    `"tags":[],"locale":null,"market":null,"document":${document},"idempotencyKey":"upsert:${id}:${rev}"}`
}

async function post(handler, raw) {
  const headers = {'content-type': 'application/json', 'sanity-fly-sync-signature': await encodeSignatureHeader(raw, Date.now(), secret)}
  const response = await handler(new Request('http://machine.internal/internal/content-sync', {method: 'POST', headers, body: raw}))
  return {status: response.status, json: await response.json()}
}

function app(extra = {}) {
  const seen = []
  const handler = createReceiver({secret, machineId: 'machine-a', apply: (change) => void seen.push(change), ...extra})
  return {handler, seen}
}

test('integers beyond 2^53 reach the apply hook exactly (BigInt), and the change is committed once', async () => {
  const {handler, seen} = app()
  const document = '{"_id":"page-1","big":9007199254740993,"negative":-123456789012345678901234567890,"small":42,"ratio":0.5,"list":[18014398509481985]}'
  const first = await post(handler, body({document}))
  assert.equal(first.status, 200, JSON.stringify(first.json))
  assert.equal(first.json.status, 'applied')
  const doc = seen[0].document
  assert.equal(doc.big, 9007199254740993n)
  assert.equal(doc.negative, -123456789012345678901234567890n)
  assert.equal(doc.list[0], 18014398509481985n)
  assert.equal(doc.small, 42, 'safe numbers stay numbers')
  assert.equal(doc.ratio, 0.5)
  // Committed once: the same delivery again is a duplicate, and the hook did not run again.
  assert.equal((await post(handler, body({document}))).json.status, 'duplicate')
  assert.equal(seen.length, 1)
})

test('a `__proto__` key stays an ordinary own key of the document; no prototype is touched', async () => {
  for (const extra of ['', ',"big":123456789012345678901']) {
    const {handler, seen} = app()
    const document = `{"_id":"page-1","__proto__":{"polluted":"yes"},"title":"T"${extra}}`
    const r = await post(handler, body({document}))
    assert.equal(r.status, 200, JSON.stringify(r.json))
    const doc = seen[0].document
    assert.equal(Object.getPrototypeOf(doc), Object.prototype, `the document's prototype (${extra || 'fast path'})`)
    assert.ok(Object.hasOwn(doc, '__proto__'))
    assert.deepEqual(Object.getOwnPropertyDescriptor(doc, '__proto__').value, {polluted: 'yes'})
    assert.equal(doc.polluted, undefined)
    assert.equal({}.polluted, undefined, 'Object.prototype untouched')
    assert.deepEqual(Object.keys(doc), extra ? ['_id', '__proto__', 'title', 'big'] : ['_id', '__proto__', 'title'])
  }
})

test('a push nested 10,000 deep is refused (400, naming the bound), records nothing, and the next push applies', async () => {
  const {handler, seen} = app()
  const deep = body({document: `{"a":${'['.repeat(10_000)}${']'.repeat(10_000)}}`})
  const r = await post(handler, deep)
  assert.equal(r.status, 400)
  assert.equal(r.json.field, 'body')
  assert.match(r.json.error, /nested at most 128 levels deep/)
  assert.equal(seen.length, 0)
  const next = await post(handler, body())
  assert.equal(next.status, 200)
  assert.equal(next.json.status, 'applied', 'nothing of the refused push was recorded (same id and revision)')
})

/** A stand-in for Sanity's query API on loopback: `answer(query)` gives the text of each answer. */
async function queryServer(answer) {
  const server = createServer((req, res) => {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', (chunk) => (text += chunk))
    req.on('end', () => {
      res.writeHead(200, {'content-type': 'application/json'}).end(answer(JSON.parse(text).query))
    })
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {url: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((resolve) => server.close(resolve))}
}

const pulled = (id, extra = '') => `{"_id":"${id}","_type":"page","_rev":"r1","_updatedAt":"${NOW()}"${extra}}`

test('a reconciliation page nested 10,000 deep is an error result, never a trap, and the receiver keeps working', async () => {
  // From a client (a JS value): it cannot even be serialised.
  let deep = []
  for (let i = 0, at = deep; i < 10_000; i++) at.push((at = []))
  const results = []
  const viaClient = createReceiver({
    secret, machineId: 'm', apply() {},
    catchUp: {types: ['page'], intervalSeconds: 3600, client: {fetch: async () => [{_id: 'p', _type: 'page', _rev: 'r', _updatedAt: NOW(), deep}]}, onRun: (r) => results.push(r)},
  })
  const run = await viaClient.ready
  viaClient.close()
  assert.match(run.error, /nested too deeply/)
  assert.equal(run.applied, 0)
  assert.equal(run.mark, null)
  // Over HTTP (the built-in client): the core reads the text and refuses it by its bound.
  const lake = await queryServer(() => `{"result":[${pulled('p', `,"deep":${'['.repeat(10_000)}${']'.repeat(10_000)}`)}]}`)
  try {
    const viaHttp = createReceiver({secret, machineId: 'm', apply() {}, catchUp: {types: ['page'], intervalSeconds: 3600, projectId: 'p', dataset: 'd', apiHost: lake.url}})
    const refused = await viaHttp.ready
    viaHttp.close()
    assert.match(refused.error, /`result`: expected a list of documents nested at most 128 levels deep, got deeper nesting/)
  } finally {
    await lake.close()
  }
  // The module still works: a push is applied.
  const {handler, seen} = app()
  assert.equal((await post(handler, body())).status, 200)
  assert.equal(seen.length, 1)
})

test('integers beyond 2^53 and `__proto__` keys in a pulled document reach the hook exactly', async () => {
  const lake = await queryServer((query) =>
    query.endsWith('._id') ? '{"result":["big"]}' : `{"ms":1,"result":[${pulled('big', ',"n":9007199254740993,"__proto__":{"x":1}')}]}`)
  const held = new Map()
  try {
    const receiver = createReceiver({
      secret, machineId: 'm', apply: (c) => void held.set(c.id, c.document),
      catchUp: {types: ['page'], intervalSeconds: 3600, projectId: 'p', dataset: 'd', apiHost: lake.url},
    })
    const run = await receiver.ready
    receiver.close()
    assert.equal(run.error, undefined)
    assert.equal(run.applied, 1, JSON.stringify(run))
    const doc = held.get('big')
    assert.equal(doc.n, 9007199254740993n)
    assert.equal(Object.getPrototypeOf(doc), Object.prototype)
    assert.deepEqual(Object.getOwnPropertyDescriptor(doc, '__proto__').value, {x: 1})
  } finally {
    await lake.close()
  }
})

test('a trap inside the core: the module is replaced, the request gets 503 (retryable), and the next calls work', async (t) => {
  const a = app()
  const b = app()
  assert.equal((await post(a.handler, body({id: 'before', document: '{"_id":"before"}'}))).json.status, 'applied')
  const generation = wasmGeneration()
  // A real trap, as a defect in the core would cause one: the next `verify` reads far outside the module's memory
  // while the receiver object is borrowed, which would leave that object (and so every later call) unusable.
  const verify = SyncReceiver.prototype.verify
  t.after(() => (SyncReceiver.prototype.verify = verify))
  SyncReceiver.prototype.verify = function trapOnce() {
    SyncReceiver.prototype.verify = verify
    const raw = initSync({module: new Uint8Array(0)})
    return raw.syncreceiver_verify(this.__wbg_ptr, 0x7fff_fff0, 64, 0x7fff_fff0, 64, Date.now())
  }
  const errors = []
  const consoleError = console.error
  console.error = (message) => errors.push(String(message))
  t.after(() => (console.error = consoleError))
  const trapped = await post(a.handler, body())
  assert.equal(trapped.status, 503)
  assert.equal(trapped.json.class, 'retryable')
  assert.match(trapped.json.error, /restarted its core after a failure; retry/)
  assert.match(errors.join('\n'), /the wasm core failed \(.*memory access out of bounds.*\); started it over with empty state/)
  assert.equal(wasmGeneration(), generation + 1, 'a fresh instance of the module')
  // The retry is applied, by this receiver and by another one in the same process.
  const retry = await post(a.handler, body())
  assert.equal(retry.status, 200, JSON.stringify(retry.json))
  assert.equal(retry.json.status, 'applied')
  assert.equal((await post(b.handler, body({id: 'other', document: '{"_id":"other"}'}))).json.status, 'applied')
  assert.deepEqual(a.seen.map((c) => c.id), ['before', 'page-1'])
})

test('after a trap, a receiver with catch-up reads everything again at once, as at boot', async (t) => {
  const docs = [{_id: 'a', _type: 'page', _rev: 'r1', _updatedAt: NOW()}, {_id: 'b', _type: 'page', _rev: 'r1', _updatedAt: NOW()}]
  const runs = []
  let second
  const secondRun = new Promise((resolve) => (second = resolve))
  const applied = []
  const receiver = createReceiver({
    secret, machineId: 'm', apply: (c) => void applied.push(`${c.target}:${c.id}`),
    catchUp: {
      types: ['page'], intervalSeconds: 3600,
      client: {fetch: async (q) => (q.endsWith('._id') ? docs.map((d) => d._id) : docs)},
      onRun: (r) => (runs.push(r), runs.length === 2 && second()),
    },
  })
  t.after(() => receiver.close())
  assert.equal((await receiver.ready).applied, 2)
  const verify = SyncReceiver.prototype.verify
  t.after(() => (SyncReceiver.prototype.verify = verify))
  SyncReceiver.prototype.verify = function trapOnce() {
    SyncReceiver.prototype.verify = verify
    return initSync({module: new Uint8Array(0)}).syncreceiver_verify(this.__wbg_ptr, 0x7fff_fff0, 64, 0x7fff_fff0, 64, Date.now())
  }
  const consoleError = console.error
  console.error = () => {}
  t.after(() => (console.error = consoleError))
  assert.equal((await post(receiver, body({id: 'a', rev: 'r2', document: '{"_id":"a"}'}))).status, 503)
  let timer
  await Promise.race([secondRun, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('no catch-up run after the restart')), 10_000)))])
  clearTimeout(timer)
  assert.equal(runs[1].error, undefined)
  assert.equal(runs[1].applied, 2, 'the fresh core holds nothing: every document is read and applied again')
  assert.deepEqual(applied, ['catch-up:a', 'catch-up:b', 'catch-up:a', 'catch-up:b'])
})
