// The webhook entry's dependents lookup, end to end: a GROQ-webhook delivery of an edit of a person, signed as
// @sanity/webhook signs it, goes through `createWebhookHandler` (function.ts); the run asks a local Content Lake
// (a private dataset on loopback) for the published posts that reference the person, authenticated with the read
// token from the environment (SANITY_API_READ_TOKEN), and pushes their routes as `dependents` to every started
// Machine of the loopback Fly stand-in. Without the token, or with a wrong one, the person still goes out and the
// report says what the lookup missed — and no token ever shows in the logs or the report.
import {after, afterEach, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {createServer} from 'node:http'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createWebhookHandler} from '../../function.ts'
import {startContentLake} from '../../local/content-lake/server.mjs'
import {DocumentStore} from '../../local/content-lake/store.mjs'
import {startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {SANITY_WEBHOOK_SECRET, standInVars} from './support/run.mjs'

const READ_TOKEN = 'sk-webhook-read-token-0123456789'
const WRONG_TOKEN = 'sk-not-the-datasets-token-9876543210'
const ref = (id) => ({_type: 'reference', _ref: id})
const post = (n, extra = {}) => ({_id: `post-${n}`, _type: 'post', title: `Post ${n}`, slug: {_type: 'slug', current: `p${n}`}, ...extra})
const POST_ROUTES = ['/posts/p1', '/posts/p2', '/posts/p3']

/** A person shown by three published posts; a fourth post by someone else, and a draft that also shows the person. */
const seed = () => [
  {_id: 'person-ada', _type: 'person', name: 'Ada'},
  {_id: 'person-grace', _type: 'person', name: 'Grace'},
  ...[1, 2, 3].map((n) => post(n, {author: ref('person-ada')})),
  post(4, {author: ref('person-grace')}),
  {...post(5, {author: ref('person-ada')}), _id: 'drafts.post-5'},
]

/** What the webhook's projection delivers for an edit of the person: `{..., _id, _type, _rev, _updatedAt, "op": delta::operation()}`. */
const personEdit = (rev) =>
  JSON.stringify({_id: 'person-ada', _type: 'person', _rev: rev, _updatedAt: '2026-11-27T10:00:00Z', op: 'update', name: 'Ada Lovelace'})

/**
 * A loopback front for the lake that records each request as the lake receives it (method, path, headers, body)
 * and passes it on unchanged: the lake's own log has no headers.
 */
async function startRecordingFront(target) {
  const seen = []
  const server = createServer(async (req, res) => {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    const body = Buffer.concat(chunks)
    seen.push({method: req.method, url: req.url, headers: {...req.headers}, body: body.toString('utf8')})
    const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => !['host', 'connection', 'content-length'].includes(k)))
    const answer = await fetch(`${target}${req.url}`, {method: req.method, headers, body: req.method === 'GET' ? undefined : body})
    const text = await answer.text()
    res.writeHead(answer.status, {'content-type': answer.headers.get('content-type') ?? 'application/json'})
    res.end(text)
  })
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

describe('webhook entry: dependents looked up with the read token from the environment', () => {
  let lake
  let front
  let standIn
  let logs
  before(async () => {
    const store = new DocumentStore({now: () => Date.parse('2026-11-27T09:00:00Z')})
    store.transaction(seed().map((doc) => ({createOrReplace: doc})))
    // A private dataset: a query needs `Authorization: Bearer <READ_TOKEN>`; one without a token is answered as if
    // the dataset were empty (how Sanity answers it is unverified; the lake's 'unauthorized' mode is the 401 case).
    lake = await startContentLake({store, token: READ_TOKEN, anonymousQueries: 'empty'})
    front = await startRecordingFront(lake.url)
  })
  after(async () => {
    await front?.close()
    await lake?.close()
  })
  // A stand-in of its own per case: a new Machines API address, so no case is served the Machine list an earlier
  // one read (the shim reuses a recent identical list answer) and each reads its own.
  beforeEach(async () => {
    standIn = await startFlyStandIn()
    front.seen.splice(0)
    logs = []
  })
  afterEach(async () => {
    await standIn?.close()
  })

  const env = (extra = {}) => ({
    ...standInVars(standIn.url),
    SANITY_WEBHOOK_SECRET,
    FLY_SYNC_ROUTES: 'post=/posts/{slug}',
    SANITY_PROJECT_ID: lake.projectId,
    SANITY_DATASET: lake.dataset,
    SANITY_API_HOST: front.url,
    ...extra,
  })

  /** One signed delivery through `createWebhookHandler(vars)`: its status, report, and the raw text of both. */
  async function deliver(vars, rev) {
    const handle = createWebhookHandler(vars, (line) => logs.push(line))
    const body = personEdit(rev)
    const request = new Request('http://127.0.0.1/webhook', {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'sanity-webhook-signature': await encodeSignatureHeader(body, Date.now(), SANITY_WEBHOOK_SECRET),
        'sanity-operation': 'update',
        'sanity-document-id': 'person-ada',
      },
      body,
    })
    const response = await handle(request)
    const text = await response.text()
    return {status: response.status, report: JSON.parse(text), text}
  }

  /** The queries that reached the lake (through the front), with what they asked. */
  const queries = () => front.seen.filter((r) => r.method === 'POST' && r.url.startsWith(`/v2025-02-19/data/query/${lake.dataset}`))

  /** No token (of the ones in play) in the report, its raw text, or any log line. */
  function assertNoToken(text, tokens = [READ_TOKEN, WRONG_TOKEN]) {
    const logged = logs.map((line) => JSON.stringify(line)).join('\n')
    assert.ok(logs.length > 0, 'the handler logged the run')
    for (const token of tokens) {
      assert.ok(!text.includes(token), 'the token is not in the report')
      assert.ok(!logged.includes(token), 'the token is not in the logs')
    }
  }

  test('with SANITY_API_READ_TOKEN: every started Machine gets the person with the three posts that show it', async () => {
    const r = await deliver(env({SANITY_API_READ_TOKEN: READ_TOKEN}), 'tx-1')
    assert.equal(r.status, 200, r.text)
    assert.equal(r.report.status, 'ok')

    const asked = queries()
    assert.equal(asked.length, 1, 'depth 1: one query')
    assert.equal(asked[0].headers.authorization, `Bearer ${READ_TOKEN}`, 'the read token, as a Bearer token')
    const {params} = JSON.parse(asked[0].body)
    assert.deepEqual(params.ids, ['person-ada'])
    assert.deepEqual(
      lake.log.filter((e) => e.path.includes('/data/query/')).map((e) => e.status),
      [200],
      'the private dataset answered the query (a wrong or missing token is refused or sees nothing)',
    )

    const pushes = await assertOnePushPerStartedMachine(standIn)
    for (const push of pushes) {
      assert.equal(push.id, 'person-ada')
      assert.equal(push.document.name, 'Ada Lovelace')
      const documents = [...push.dependents.documents].sort((a, b) => a.id.localeCompare(b.id))
      assert.deepEqual(documents.map((d) => d.id), ['post-1', 'post-2', 'post-3'], 'published posts by the person: not post-4, not the draft')
      assert.deepEqual(documents.map((d) => d.routes), POST_ROUTES.map((route) => [route]))
      for (const route of POST_ROUTES) assert.ok(push.routes.invalidate.includes(route), `${route} is invalidated with the person`)
    }
    const d = r.report.targets[0].dependents
    assert.deepEqual([...d.pushed].sort(), ['post-1', 'post-2', 'post-3'])
    assert.equal(d.withoutToken, undefined, 'the lookup had a token')
    assert.equal(r.report.targets[0].requests.sanity, 1)
    assertNoToken(r.text)
  })

  test('without SANITY_API_READ_TOKEN: the person still goes out; the report says the lookup was anonymous and what that misses', async () => {
    const r = await deliver(env(), 'tx-2')
    assert.equal(r.status, 200, r.text)

    const asked = queries()
    assert.equal(asked.length, 1, 'the lookup was still made')
    assert.equal(asked[0].headers.authorization, undefined, 'with no token')

    const pushes = await assertOnePushPerStartedMachine(standIn)
    for (const push of pushes) {
      assert.equal(push.id, 'person-ada')
      assert.equal(push.document.name, 'Ada Lovelace')
      assert.deepEqual(push.dependents?.documents ?? [], [], 'the private dataset showed the anonymous query nothing')
    }
    const d = r.report.targets[0].dependents
    assert.deepEqual(d.pushed, [])
    assert.match(d.withoutToken, /without a token/)
    assert.match(d.withoutToken, /private dataset/)
    assert.match(d.withoutToken, /SANITY_API_READ_TOKEN/)
    assertNoToken(r.text)
  })

  test('with a wrong SANITY_API_READ_TOKEN: the person still goes out; the report names the refusal, not the token', async () => {
    const r = await deliver(env({SANITY_API_READ_TOKEN: WRONG_TOKEN}), 'tx-3')
    assert.equal(r.report.status, 'partial', 'the dependents stayed stale: not ok')
    assert.equal(r.status, 500, 'a fatal error, not a retryable one')

    const asked = queries()
    assert.equal(asked.length, 1, 'a refused token is not asked again')
    assert.equal(asked[0].headers.authorization, `Bearer ${WRONG_TOKEN}`)
    assert.deepEqual(lake.log.at(-1).status, 401, 'the lake refused it')

    const pushes = await assertOnePushPerStartedMachine(standIn)
    for (const push of pushes) {
      assert.equal(push.id, 'person-ada')
      assert.equal(push.document.name, 'Ada Lovelace')
      assert.equal(push.dependents, undefined, 'no dependents: none claimed')
    }
    const started = r.report.targets[0].machines.filter((m) => m.state === 'started')
    assert.equal(started.length, 2)
    assert.ok(started.every((m) => m.sync === 'synced'), 'the person reached every started Machine')
    const d = r.report.targets[0].dependents
    assert.deepEqual(d.pushed, [])
    assert.equal(d.error.class, 'fatal')
    assert.match(d.error.message, /Sanity refused the query/)
    assert.match(d.error.message, /SANITY_API_READ_TOKEN/)
    assertNoToken(r.text)
  })
})
