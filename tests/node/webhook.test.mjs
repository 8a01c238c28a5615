// The GROQ-webhook entry (createWebhookHandler) behind the node:http adapter in examples/webhook-server.mjs,
// against a loopback stand-in for the Machines API and the app: what a bad delivery gets back, and that a good
// one (even delivered twice) reaches every started Machine.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createWebhookServer} from '../../examples/webhook-server.mjs'
import {APP, startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET, SANITY_WEBHOOK_SECRET} from './support/run.mjs'

async function listen(server) {
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  return `http://127.0.0.1:${server.address().port}/`
}

async function close(server) {
  if (!server?.listening) return
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
}

const delivery = (extra = {}) =>
  JSON.stringify({
    _id: 'article-7',
    _type: 'article',
    _rev: 'tx-1',
    _updatedAt: '2026-11-27T10:00:00Z',
    title: 'Hi',
    slug: {current: 'hi'},
    ...extra,
  })

const sign = (body, {secret = SANITY_WEBHOOK_SECRET, at = Date.now()} = {}) => encodeSignatureHeader(body, at, secret)

describe('webhook entry through the node:http adapter', () => {
  let standIn
  let server
  let url
  let env
  const logs = []
  before(async () => {
    standIn = await startFlyStandIn()
    env = {
      FLY_APP_NAME: APP,
      FLY_API_TOKEN,
      FLY_SYNC_SECRET,
      SANITY_WEBHOOK_SECRET,
      FLY_API_URL: standIn.url,
      FLY_APP_URL: standIn.url,
      FLY_SYNC_ROUTES: 'article=/blog/{slug}',
    }
    server = createWebhookServer(env, {log: (line) => logs.push(line)})
    url = await listen(server)
  })
  after(async () => {
    await close(server)
    await standIn?.close()
  })
  beforeEach(() => {
    standIn.reset()
    logs.length = 0
  })

  async function post(body, headers = {}, target = url) {
    const response = await fetch(target, {method: 'POST', headers: {'content-type': 'application/json', ...headers}, body})
    return {status: response.status, json: await response.json()}
  }

  /** A rejected delivery: the status, a message that names the problem, and nothing sent anywhere. */
  async function assertRejected(result, status, field, message) {
    assert.equal(result.status, status, JSON.stringify(result.json))
    assert.equal(result.json.field, field)
    assert.match(result.json.error, message)
    assert.deepEqual(standIn.requests, [], 'nothing reached the Machines API or the app')
  }

  test('no signature header: 401', async () => {
    const r = await post(delivery())
    await assertRejected(r, 401, 'sanity-webhook-signature', /expected a signature header/)
  })

  test('signed with another secret: 401', async () => {
    const body = delivery()
    const r = await post(body, {'sanity-webhook-signature': await sign(body, {secret: 'not-the-webhook-secret'})})
    await assertRejected(r, 401, 'sanity-webhook-signature', /does not match the body/)
  })

  test('a signature older than the window (5 min): 401', async () => {
    const body = delivery()
    const r = await post(body, {'sanity-webhook-signature': await sign(body, {at: Date.now() - 10 * 60_000})})
    await assertRejected(r, 401, 'sanity-webhook-signature', /600s old; at most 300s/)
  })

  test('a body changed after signing: 401', async () => {
    const signature = await sign(delivery())
    const r = await post(delivery({title: 'Tampered'}), {'sanity-webhook-signature': signature})
    await assertRejected(r, 401, 'sanity-webhook-signature', /does not match the body/)
  })

  test('malformed JSON with a valid signature: 400 (Sanity does not retry a 4xx)', async () => {
    const body = '{"_id": "article-7",'
    const r = await post(body, {'sanity-webhook-signature': await sign(body)})
    await assertRejected(r, 400, 'body', /invalid JSON/)
    assert.equal(r.json.stage, 'input')
  })

  test('a draft id: 200, report `skipped`, nothing sent', async () => {
    const body = delivery({_id: 'drafts.article-7'})
    const r = await post(body, {'sanity-webhook-signature': await sign(body)})
    assert.equal(r.status, 200, JSON.stringify(r.json))
    assert.equal(r.json.ok, true)
    assert.equal(r.json.status, 'skipped')
    assert.match(r.json.targets[0].skipped, /draft ids/)
    assert.deepEqual(standIn.requests, [])
  })

  test('SANITY_WEBHOOK_SECRET missing: 500 (a deployment error, so Sanity retries) and nothing sent', async () => {
    const {SANITY_WEBHOOK_SECRET: _, ...withoutSecret} = env
    const bare = createWebhookServer(withoutSecret, {log: () => {}})
    try {
      const body = delivery()
      const r = await post(body, {'sanity-webhook-signature': await sign(body)}, await listen(bare))
      await assertRejected(r, 500, 'SANITY_WEBHOOK_SECRET', /secret set on the GROQ-powered webhook/)
      assert.equal(r.json.stage, 'config')
    } finally {
      await close(bare)
    }
  })

  test('the adapter: GET is 405, an oversized body 413, neither reaches the core', async () => {
    const get = await fetch(url)
    assert.equal(get.status, 405)
    assert.match((await get.json()).error, /POST/)
    const big = await post(JSON.stringify({_id: 'a', pad: 'x'.repeat(5 * 1024 * 1024)}))
    assert.equal(big.status, 413)
    assert.deepEqual(logs, [], 'the core was never called')
    assert.deepEqual(standIn.requests, [])
  })

  test('a good signed delivery: 200 and one signed push per started Machine', async () => {
    const body = delivery()
    const r = await post(body, {
      'sanity-webhook-signature': await sign(body),
      'sanity-operation': 'update',
      'sanity-document-id': 'article-7',
      'idempotency-key': 'idem-article-7-tx-1',
    })
    assert.equal(r.status, 200, JSON.stringify(r.json))
    assert.equal(r.json.ok, true)
    assert.equal(r.json.status, 'ok')
    const [push] = await assertOnePushPerStartedMachine(standIn)
    assert.equal(push.op, 'upsert')
    assert.equal(push.operation, 'update', 'from the sanity-operation header')
    assert.equal(push.id, 'article-7')
    assert.equal(push.idempotencyKey, 'idem-article-7-tx-1', "the delivery's idempotency-key")
    assert.deepEqual(push.routes.current, ['/blog/hi'])
    assert.equal(push.document.title, 'Hi')
  })

  test('the same delivery twice (same idempotency-key): both 200, every push carries that key', async () => {
    const body = delivery({_rev: 'tx-2'})
    const headers = {'sanity-operation': 'update', 'idempotency-key': 'idem-article-7-tx-2'}
    const first = await post(body, {...headers, 'sanity-webhook-signature': await sign(body)})
    const second = await post(body, {...headers, 'sanity-webhook-signature': await sign(body)})
    assert.equal(first.status, 200, JSON.stringify(first.json))
    assert.equal(second.status, 200, JSON.stringify(second.json))
    const syncs = standIn.syncs()
    assert.equal(syncs.length, 4, 'two Machines, twice: the receivers dedupe, not the sender')
    for (const s of syncs) {
      assert.equal(s.headers['idempotency-key'], 'idem-article-7-tx-2')
      assert.equal(s.body.idempotencyKey, 'idem-article-7-tx-2')
      assert.equal(s.body.rev, 'tx-2')
    }
  })
})
