// The reference receiver (receiver/index.ts) as a Fly app mounts it: signed requests in, hooks run, acks out.
// Requests are signed with @sanity/webhook, which is how any app could check them too.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createReceiver} from '../../receiver/index.ts'

const secret = '0123456789abcdef-receiver'

function payload(over = {}) {
  return {
    protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'update', id: 'page-1', type: 'page',
    rev: 'r2', updatedAt: '2026-11-27T10:00:05Z', slug: 'new', previousSlug: 'old',
    routes: {invalidate: ['/new', '/old'], current: ['/new'], previous: ['/old']}, tags: ['page-1', 'page'],
    locale: null, market: null, document: {_id: 'page-1', title: 'New'}, idempotencyKey: 'upsert:page-1:r2', ...over,
  }
}

async function post(handler, body, {at = Date.now(), key = secret, header = 'sanity-fly-sync-signature', method = 'POST'} = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body)
  const headers = {'content-type': 'application/json'}
  if (header) headers[header] = await encodeSignatureHeader(raw, at, key)
  const response = await handler(new Request('http://machine.internal/internal/content-sync', {method, headers, body: method === 'POST' ? raw : undefined}))
  return {status: response.status, json: await response.json()}
}

function app(extra = {}) {
  const store = new Map()
  const purged = []
  const handler = createReceiver({
    secret,
    machineId: 'machine-a',
    apply(change) {
      if (change.op === 'delete') store.delete(change.id)
      else store.set(change.id, change.document)
      return extra.apply?.(change)
    },
    invalidate(routes, tags) {
      purged.push(...routes, ...tags)
    },
    ...extra.options,
  })
  return {handler, store, purged}
}

test('a signed upsert is applied, its routes and tags purged, and the ack names the Machine', async () => {
  const {handler, store, purged} = app()
  const r = await post(handler, payload())
  assert.equal(r.status, 200)
  assert.deepEqual(r.json, {protocol: 'sanity-fly-sync/1', machine: 'machine-a', status: 'applied', restart: null})
  assert.deepEqual(store.get('page-1'), {_id: 'page-1', title: 'New'})
  assert.deepEqual(purged, ['/new', '/old', 'page-1', 'page'])
})

test('duplicates, older revisions and late updates after a delete change nothing', async () => {
  const {handler, store} = app()
  assert.equal((await post(handler, payload())).json.status, 'applied')
  assert.equal((await post(handler, payload())).json.status, 'duplicate')
  const older = payload({rev: 'r1', updatedAt: '2026-11-27T10:00:00Z', idempotencyKey: 'upsert:page-1:r1', document: {title: 'Old'}})
  const r = await post(handler, older)
  assert.equal(r.status, 200)
  assert.equal(r.json.status, 'stale')
  assert.equal(store.get('page-1').title, 'New')
  const del = payload({op: 'delete', operation: 'delete', document: undefined, idempotencyKey: 'delete:page-1:r2'})
  assert.equal((await post(handler, del)).json.status, 'applied')
  assert.equal(store.has('page-1'), false)
  const late = payload({idempotencyKey: 'another-retry'})
  assert.equal((await post(handler, late)).json.status, 'stale', 'the tombstone holds')
  assert.equal(store.has('page-1'), false)
})

test('bad requests get the right status and a message naming what is wrong', async () => {
  const {handler, store} = app()
  const cases = [
    [await post(handler, payload(), {header: null}), 401, /sanity-fly-sync-signature.*no header/],
    [await post(handler, payload(), {key: 'another-secret-value-xx'}), 401, /does not match/],
    [await post(handler, payload(), {at: Date.now() - 10 * 60_000}), 401, /old; at most 300s/],
    [await post(handler, '{"protocol":', {}), 400, /invalid JSON/],
    [await post(handler, payload({protocol: 'sanity-fly-sync/9'})), 400, /`protocol`: expected `sanity-fly-sync\/1`/],
    [await post(handler, payload({document: undefined})), 400, /`document`: expected the document/],
    [await post(handler, payload({id: 'drafts.page-1'})), 422, /draft and version ids/],
  ]
  for (const [r, status, message] of cases) {
    assert.equal(r.status, status, JSON.stringify(r.json))
    assert.match(r.json.error, message)
  }
  assert.equal(store.size, 0, 'nothing was applied')
  const get = await handler(new Request('http://m/internal/content-sync'))
  assert.equal(get.status, 405)
})

test('a failing hook answers 503 and the retry applies; a hook can ask for a restart', async () => {
  let fail = true
  const {handler, store} = app({apply: () => (fail ? Promise.reject(new Error('database is read-only')) : {restart: true})})
  const first = await post(handler, payload())
  assert.equal(first.status, 503)
  assert.match(first.json.error, /could not apply page-1: database is read-only/)
  fail = false
  const retry = await post(handler, payload())
  assert.equal(retry.status, 200)
  assert.equal(retry.json.restart, 'required')
  assert.ok(store.has('page-1'))
})

test('concurrent deliveries of one change apply it once', async () => {
  let applied = 0
  const {handler} = app({apply: async () => { applied += 1; await new Promise((r) => setImmediate(r)) }})
  const results = await Promise.all([post(handler, payload()), post(handler, payload()), post(handler, payload())])
  assert.deepEqual(results.map((r) => r.json.status).sort(), ['applied', 'duplicate', 'duplicate'])
  assert.equal(applied, 1)
})

test('bad options are refused up front with the field named', () => {
  assert.throws(() => createReceiver({secret: 'short', machineId: 'm', apply() {}}), (e) => e.field === 'secret')
  assert.throws(() => createReceiver({secret, apply() {}}), (e) => e.field === 'machineId' && /FLY_MACHINE_ID/.test(e.message))
  assert.throws(() => createReceiver({secret, machineId: 'm', maxBodyBytes: 10, apply() {}}), (e) => e.field === 'maxBodyBytes')
  assert.throws(() => createReceiver({secret, machineId: 'm', hookTimeoutMs: 0, apply() {}}), (e) => e.field === 'hookTimeoutMs')
})

test('the secret is used exactly as given: surrounding whitespace is a configuration error naming the setting', async () => {
  for (const padded of [`${secret}\n`, ` ${secret}`, `${secret}\r\n`]) {
    assert.throws(
      () => createReceiver({secret: padded, machineId: 'm', apply() {}}),
      (e) => e.class === 'bad_input' && e.field === 'secret' && /without surrounding spaces or line breaks/.test(e.message) && !e.message.includes(secret),
    )
  }
  // Spaces inside are part of the secret, on both sides.
  const inner = '0123456789 abcdef receiver'
  const {handler} = app({options: {secret: inner}})
  assert.equal((await post(handler, payload(), {key: inner})).status, 200)
  assert.equal((await post(handler, payload({idempotencyKey: 'k2'}), {key: inner.replaceAll(' ', '')})).status, 401)
})

test('a revision time more than the skew bound ahead is refused, so one push cannot freeze a document', async () => {
  const {handler, store} = app()
  const future = new Date(Date.now() + 10 * 60_000).toISOString()
  const r = await post(handler, payload({op: 'delete', operation: 'delete', document: undefined, updatedAt: future, idempotencyKey: 'delete:page-1:r9'}))
  assert.equal(r.status, 400)
  assert.equal(r.json.field, 'updatedAt')
  assert.match(r.json.error, /expected a revision time at most 120 s ahead of this clock, got a time (599|600) s in the future/)
  // Nothing was recorded: the real edit (in the past) applies.
  assert.equal((await post(handler, payload())).json.status, 'applied')
  assert.ok(store.has('page-1'))
  const soon = new Date(Date.now() + 60_000).toISOString()
  assert.equal((await post(handler, payload({rev: 'r3', updatedAt: soon, idempotencyKey: 'upsert:page-1:r3'}))).json.status, 'applied', 'within the bound')
})

test('routes that are not same-origin absolute paths are refused, naming the field', async () => {
  const {handler, store, purged} = app()
  const cases = [
    [{invalidate: ['/new', 'https://evil.example/'], current: ['/new'], previous: []}, 'routes.invalidate[1]'],
    [{invalidate: ['/new'], current: ['//evil.example/new'], previous: []}, 'routes.current[0]'],
    [{invalidate: ['/new'], current: ['/new'], previous: ['/blog/../../admin']}, 'routes.previous[0]'],
    [{invalidate: ['/new\r\nset-cookie: a=b'], current: [], previous: []}, 'routes.invalidate[0]'],
  ]
  for (const [routes, field] of cases) {
    const r = await post(handler, payload({routes}))
    assert.equal(r.status, 400, field)
    assert.equal(r.json.field, field)
    assert.match(r.json.error, /expected a path on the app's own origin/)
    assert.doesNotMatch(r.json.error, /evil|admin|cookie/, 'the value is not echoed')
  }
  assert.equal(store.size, 0)
  assert.deepEqual(purged, [])
})

test('the vendorable bundle (dist/receiver/index.js) works on its own', async () => {
  const {createReceiver: bundled} = await import('../../dist/receiver/index.js')
  const stored = []
  const handler = bundled({secret, machineId: 'machine-b', apply: (change) => void stored.push(change.id)})
  const r = await post(handler, payload())
  assert.equal(r.status, 200)
  assert.equal(r.json.machine, 'machine-b')
  assert.deepEqual(stored, ['page-1'])
})
