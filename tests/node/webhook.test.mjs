// The GROQ-webhook entry (createWebhookHandler) behind the node:http adapter in examples/webhook-server.mjs,
// against a loopback stand-in for the Machines API and the app: what a bad delivery gets back, that the signed
// body alone decides what changes (headers are not signed), that signature headers are read exactly as
// @sanity/webhook reads them, and that a good delivery (even delivered twice) reaches every started Machine.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {encodeSignatureHeader, isValidSignature} from '@sanity/webhook'
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

// What the webhook's projection carries: `{..., _id, _type, _rev, _updatedAt, "op": delta::operation()}`.
const delivery = (extra = {}) =>
  JSON.stringify({
    _id: 'article-7',
    _type: 'article',
    _rev: 'tx-1',
    _updatedAt: '2026-11-27T10:00:00Z',
    op: 'update',
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
    assert.equal(push.operation, 'update', "the signed body's op (the header only agrees with it)")
    assert.equal(push.id, 'article-7')
    assert.equal(push.idempotencyKey, 'upsert:article-7:tx-1', 'derived from the signed body: op, id, rev')
    assert.deepEqual(push.routes.current, ['/blog/hi'])
    assert.equal(push.document.title, 'Hi')
  })

  test('the same delivery twice, even with another idempotency-key header: both 200, every push carries one key', async () => {
    const body = delivery({_rev: 'tx-2'})
    const first = await post(body, {'idempotency-key': 'idem-1', 'sanity-webhook-signature': await sign(body)})
    const second = await post(body, {'idempotency-key': 'idem-2', 'sanity-webhook-signature': await sign(body)})
    assert.equal(first.status, 200, JSON.stringify(first.json))
    assert.equal(second.status, 200, JSON.stringify(second.json))
    const syncs = standIn.syncs()
    assert.equal(syncs.length, 4, 'two Machines, twice: the receivers dedupe, not the sender')
    for (const s of syncs) {
      assert.equal(s.headers['idempotency-key'], 'upsert:article-7:tx-2')
      assert.equal(s.body.idempotencyKey, 'upsert:article-7:tx-2')
      assert.equal(s.body.rev, 'tx-2')
    }
  })

  test('a captured delivery replayed with forged headers cannot pick the document, its revision or its key', async () => {
    // Sanity signs the body, not the headers. Before, a signed body without `_id`/`_updatedAt` took them from
    // these headers: a replay inside the age window deleted another document with a revision time in 2099.
    const forged = {
      'sanity-operation': 'update',
      'sanity-document-id': 'victim',
      'sanity-transaction-id': 'tx-forged',
      'sanity-transaction-time': '2099-01-01T00:00:00Z',
      'idempotency-key': 'forged-key',
    }
    const bare = JSON.stringify({_type: 'article', title: 'Hi'})
    const r = await post(bare, {...forged, 'sanity-webhook-signature': await sign(bare)})
    await assertRejected(r, 400, 'body._id', /_id, _type, _rev, _updatedAt/)
    for (const missing of ['_rev', '_updatedAt']) {
      const doc = JSON.parse(delivery({_id: 'victim'}))
      delete doc[missing]
      const body = JSON.stringify(doc)
      const r = await post(body, {...forged, 'sanity-webhook-signature': await sign(body)})
      await assertRejected(r, 400, `body.${missing}`, new RegExp(`project \`${missing}\``))
    }
    // A header naming another document than the signed body is refused, naming the header.
    const body = delivery()
    const other = await post(body, {...forged, 'sanity-webhook-signature': await sign(body)})
    await assertRejected(other, 400, 'sanity-document-id', /another document than the body's `_id`/)
    // With agreeing ids, the rest of the forged headers change nothing: the body's revision, time and key.
    const ok = await post(body, {...forged, 'sanity-document-id': 'article-7', 'sanity-webhook-signature': await sign(body)})
    assert.equal(ok.status, 200, JSON.stringify(ok.json))
    for (const s of standIn.syncs()) {
      assert.deepEqual([s.body.rev, s.body.updatedAt, s.body.idempotencyKey], ['tx-1', '2026-11-27T10:00:00Z', 'upsert:article-7:tx-1'])
    }
  })

  test('a signed revision time more than 120 s ahead: 400, nothing sent', async () => {
    const body = delivery({_updatedAt: new Date(Date.now() + 86_400_000).toISOString()})
    const r = await post(body, {'sanity-webhook-signature': await sign(body)})
    await assertRejected(r, 400, 'body._updatedAt', /at most 120 s ahead of this clock/)
  })

  test('a signed body nested 10,000 deep: 400 naming `body`; the next delivery syncs', async () => {
    const deep = `{"_id":"article-7","x":${'['.repeat(10_000)}${']'.repeat(10_000)}}`
    const r = await post(deep, {'sanity-webhook-signature': await sign(deep)})
    await assertRejected(r, 400, 'body', /nested at most 128 levels deep/)
    const body = delivery()
    const good = await post(body, {'sanity-webhook-signature': await sign(body)})
    assert.equal(good.status, 200, JSON.stringify(good.json))
    assert.equal(good.json.status, 'ok')
    assert.deepEqual(standIn.syncs().map((s) => s.body.id), ['article-7', 'article-7'], 'both started Machines')
  })

  test('signature headers: accepted exactly when @sanity/webhook accepts them', async () => {
    const body = delivery()
    const at = Date.now()
    const good = await sign(body, {at})
    const [, mac] = good.split(',v1=')
    const flipped = mac.slice(0, -1) + String.fromCharCode(mac.charCodeAt(mac.length - 1) + 1) // same bytes if trailing bits were ignored
    const variants = {
      canonical: good,
      'leading zero': `t=0${at},v1=${mac}`,
      'space after the comma': `t=${at}, v1=${mac}`,
      'space instead of the comma': `t=${at} v1=${mac}`,
      'two commas': `t=${at},,v1=${mac}`,
      'trailing no-break space': `${good}\u00a0`,
      'base64 padding': `${good}=`,
      'non-canonical last character': `t=${at},v1=${flipped}`,
      'two signatures': `${good},v1=${mac}`,
      'upper-case T': `T=${at},v1=${mac}`,
    }
    for (const [name, header] of Object.entries(variants)) {
      standIn.reset()
      const theirs = await isValidSignature(body, header, SANITY_WEBHOOK_SECRET)
      const r = await post(body, {'sanity-webhook-signature': header})
      const ours = r.status !== 401
      assert.equal(ours, theirs, `${name} (${JSON.stringify(header)}): @sanity/webhook ${theirs ? 'accepts' : 'refuses'}, we answered ${r.status} ${JSON.stringify(r.json)}`)
      if (!theirs) assert.equal(r.json.field, 'sanity-webhook-signature', name)
    }
    assert.equal(await isValidSignature(body, good, SANITY_WEBHOOK_SECRET), true, 'the canonical header is the control')
  })

  test('SANITY_WEBHOOK_SECRET with surrounding whitespace: 500 naming it, even for a delivery signed with it', async () => {
    // Before, the entry trimmed the secret while @sanity/webhook and the receivers use it as given: a delivery
    // signed with the padded secret got 401, a confusing answer for a configuration mistake.
    const padded = createWebhookServer({...env, SANITY_WEBHOOK_SECRET: ` ${SANITY_WEBHOOK_SECRET}\n`}, {log: () => {}})
    try {
      const body = delivery()
      const signature = await sign(body, {secret: ` ${SANITY_WEBHOOK_SECRET}\n`})
      const r = await post(body, {'sanity-webhook-signature': signature}, await listen(padded))
      await assertRejected(r, 500, 'SANITY_WEBHOOK_SECRET', /no surrounding whitespace/)
      assert.ok(!r.json.error.includes(SANITY_WEBHOOK_SECRET), 'the secret is not echoed')
    } finally {
      await close(padded)
    }
  })
})
