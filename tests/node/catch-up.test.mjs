// Catch-up and reconciliation in the reference receiver, against the local Content Lake through the real
// @sanity/client: what a Machine missed (updates, deletes) is applied through the same ordered path as pushes.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {createClient} from '@sanity/client'
import {encodeSignatureHeader} from '@sanity/webhook'
import {startContentLake} from '../../local/content-lake/server.mjs'
import {DocumentStore} from '../../local/content-lake/store.mjs'
import {createReceiver} from '../../receiver/index.ts'

const secret = '0123456789abcdef-catch-up'
const TOKEN = 'read-and-write-token'

async function setup({lakeOptions = {}, receiverCatchUp = {}, failIds = new Set()} = {}) {
  let now = Date.parse('2026-11-27T09:00:00Z')
  const store = new DocumentStore({now: () => now})
  const lake = await startContentLake({store, token: TOKEN, ...lakeOptions})
  const editor = createClient({...lake.clientConfig(), token: TOKEN})
  const tick = () => (now += 30_000)
  await editor.transaction().createOrReplace({_id: 'page-a', _type: 'page', title: 'A'}).createOrReplace({_id: 'page-b', _type: 'page', title: 'B'}).createOrReplace({_id: 'author-1', _type: 'author', name: 'X'}).commit()
  const held = new Map()
  const runs = []
  const receiver = createReceiver({
    secret,
    machineId: 'machine-1',
    apply(change) {
      if (failIds.has(change.id)) throw new Error('store unavailable')
      if (change.op === 'delete') held.delete(change.id)
      else held.set(change.id, change.document)
    },
    catchUp: {
      client: createClient({...lake.clientConfig(), token: TOKEN}),
      types: ['page'],
      intervalSeconds: 3600,
      lagSeconds: 60,
      onRun: (r) => runs.push(r),
      ...receiverCatchUp,
    },
  })
  return {lake, editor, tick, held, runs, receiver, close: async () => (receiver.close(), await lake.close())}
}

test('boot: the first run reads every document of the types; later runs apply only what changed', async () => {
  const t = await setup()
  try {
    const first = await t.receiver.ready
    assert.deepEqual([...t.held.keys()].sort(), ['page-a', 'page-b'], 'pages only, all of them')
    assert.equal(first.applied, 2)
    assert.equal(first.queries, 2, 'one page of changes and one id list')
    assert.equal(first.mark, '2026-11-27T09:00:00Z')
    t.tick()
    await t.editor.patch('page-a').set({title: 'A, edited while the push was lost'}).commit()
    const second = await t.receiver.catchUp()
    assert.equal(second.applied, 1)
    assert.equal(second.unchanged, 1, 'page-b, re-read inside the lag window, is already held')
    assert.equal(t.held.get('page-a').title, 'A, edited while the push was lost')
    assert.equal(second.mark, '2026-11-27T09:00:30Z')
  } finally {
    await t.close()
  }
})

test('a missed delete is found by comparing ids, and its tombstone stops a late push', async () => {
  const t = await setup()
  try {
    await t.receiver.ready
    const before = await t.editor.getDocument('page-b')
    t.tick()
    await t.editor.delete('page-b')
    const run = await t.receiver.catchUp()
    assert.equal(run.deleted, 1)
    assert.equal(t.held.has('page-b'), false)
    // The push of the last revision arrives late: it must not bring the page back.
    const body = JSON.stringify({protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'update', id: 'page-b', type: 'page',
      rev: before._rev, updatedAt: before._updatedAt, slug: null, previousSlug: null, routes: {invalidate: [], current: [], previous: []},
      tags: [], locale: null, market: null, document: before, idempotencyKey: `upsert:page-b:${before._rev}`})
    const response = await t.receiver(new Request('http://m/internal/content-sync', {method: 'POST', body,
      headers: {'sanity-fly-sync-signature': await encodeSignatureHeader(body, Date.now(), secret)}}))
    assert.equal((await response.json()).status, 'stale')
    assert.equal(t.held.has('page-b'), false)
  } finally {
    await t.close()
  }
})

test('a failed apply holds the mark, so the next run applies it again', async () => {
  const failIds = new Set(['page-a'])
  const t = await setup({failIds})
  try {
    const first = await t.receiver.ready
    assert.equal(first.failed.length, 1)
    assert.match(first.failed[0].error, /could not apply page-a: store unavailable/)
    assert.equal(first.mark, null, 'not everything applied: no mark')
    failIds.clear()
    const second = await t.receiver.catchUp()
    assert.equal(second.applied, 1)
    assert.ok(t.held.has('page-a'))
    assert.equal(second.mark, '2026-11-27T09:00:00Z')
  } finally {
    await t.close()
  }
})

test('a private dataset read without a token never deletes what the Machine holds', async () => {
  for (const anonymousQueries of ['empty', 'unauthorized']) {
    const t = await setup({lakeOptions: {anonymousQueries}})
    try {
      await t.receiver.ready
      // Same receiver state, now reading through a client that lost its token.
      const lost = createReceiver({
        secret,
        machineId: 'machine-2',
        apply: (c) => void (c.op === 'delete' ? t.held.delete(c.id) : t.held.set(c.id, c.document)),
        catchUp: {projectId: 'local', dataset: 'production', apiHost: t.lake.url, types: ['page'], intervalSeconds: 3600},
      })
      const run = await lost.ready
      lost.close()
      assert.equal(t.held.size, 2, `${anonymousQueries}: nothing deleted`)
      // 'empty': the lake answered (an empty result), not failed: a 5xx would also apply nothing.
      if (anonymousQueries === 'empty') {
        assert.equal(run.applied, 0)
        assert.doesNotMatch(String(run.error ?? ''), /HTTP \d/, `${anonymousQueries}: an answer, not an HTTP failure`)
      } else assert.match(run.error, /HTTP 401/)
    } finally {
      await t.close()
    }
  }
})

test('settings instead of a client: the built-in HTTP client with a read token', async () => {
  const t = await setup()
  try {
    await t.receiver.ready
    const held = new Map()
    const viaSettings = createReceiver({
      secret,
      machineId: 'machine-3',
      apply: (c) => void held.set(c.id, c.document),
      catchUp: {projectId: 'local', dataset: 'production', apiHost: t.lake.url, token: TOKEN, types: ['page'], intervalSeconds: 3600},
    })
    const run = await viaSettings.ready
    viaSettings.close()
    assert.equal(run.applied, 2)
    assert.deepEqual([...held.keys()].sort(), ['page-a', 'page-b'])
    assert.throws(() => createReceiver({secret, machineId: 'm', apply() {}, catchUp: {types: ['page']}}), (e) => e.field === 'catchUp.client')
    assert.throws(() => createReceiver({secret, machineId: 'm', apply() {}, catchUp: {types: []}}), (e) => e.field === 'catchUp.types')
  } finally {
    await t.close()
  }
})

test('a document dated beyond the skew bound is skipped with its reason; the mark never passes now + skew', async () => {
  const now = Date.now()
  const iso = (ms) => new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z')
  const docs = [
    {_id: 'page-a', _type: 'page', _rev: 'r1', _updatedAt: iso(now - 3_600_000), title: 'A'},
    {_id: 'page-b', _type: 'page', _rev: 'r1', _updatedAt: iso(now + 60_000), title: 'B, a minute ahead (clock skew)'},
    {_id: 'page-frozen', _type: 'page', _rev: 'r9', _updatedAt: '2099-01-01T00:00:00Z', title: 'would freeze the document'},
  ]
  const held = new Map()
  const receiver = createReceiver({
    secret,
    machineId: 'machine-1',
    apply: (c) => void held.set(c.id, c.document),
    catchUp: {types: ['page'], intervalSeconds: 3600, client: {fetch: async (query) => (query.endsWith('._id') ? docs.map((d) => d._id) : docs)}},
  })
  try {
    const run = await receiver.ready
    assert.equal(run.error, undefined)
    assert.equal(run.applied, 2)
    assert.deepEqual([...held.keys()].sort(), ['page-a', 'page-b'])
    assert.equal(run.skipped.length, 1)
    assert.match(run.skipped[0], /^result\[2\]: `result\[2\]\._updatedAt`: expected a revision time at most 120 s ahead of this clock, got a time \d+ s in the future$/)
    assert.equal(run.mark, iso(now + 60_000), 'the newest accepted time, which is within the bound')
    assert.ok(Date.parse(run.mark) <= Date.now() + 120_000)
    // A push of the real next edit is not "stale" against the refused 2099 revision.
    const edit = JSON.stringify({protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'update', id: 'page-frozen', type: 'page',
      rev: 'r10', updatedAt: iso(now - 1_000), routes: {invalidate: [], current: [], previous: []}, tags: [], document: {_id: 'page-frozen'},
      idempotencyKey: 'upsert:page-frozen:r10'})
    const response = await receiver(new Request('http://m/internal/content-sync', {method: 'POST', body: edit,
      headers: {'sanity-fly-sync-signature': await encodeSignatureHeader(edit, Date.now(), secret)}}))
    assert.equal((await response.json()).status, 'applied')
  } finally {
    receiver.close()
  }
})

test('an error answer that echoes the read token reaches the run\'s error scrubbed, whole or cut', async () => {
  const { createServer } = await import('node:http')
  const { once } = await import('node:events')
  const token = 'skPrivateReadToken0123456789abcdefghijklmnopqrstuvwxyz'
  const asked = []
  // Sanity's query API stand-in that quotes the bearer token it refuses: first whole, then cut by its own limit.
  const server = createServer((req, res) => {
    asked.push(req.headers.authorization)
    // The second quote holds only the token's first 23 characters, and ends past the 200 the error keeps of it.
    const quoted = asked.length === 1 ? req.headers.authorization : `${'x'.repeat(150)}${req.headers.authorization}`.slice(0, 180)
    res.writeHead(401, {'content-type': 'application/json'})
    res.end(JSON.stringify({statusCode: 401, message: `session not found for ${quoted}`}))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const apiHost = `http://127.0.0.1:${server.address().port}`
  try {
    for (const n of [1, 2]) {
      const receiver = createReceiver({secret, machineId: 'm', apply() {}, catchUp: {projectId: 'local', dataset: 'production', apiHost, token, types: ['page'], intervalSeconds: 3600}})
      const run = await receiver.ready
      receiver.close()
      assert.equal(asked.length, n, 'the query was sent with the token')
      assert.equal(asked[n - 1], `Bearer ${token}`)
      assert.match(run.error, /HTTP 401 credentials refused: session not found for x*Bearer \[redacted\]/, run.error)
      assert.ok(!run.error.includes(token.slice(0, 12)), `no part of the token: ${run.error}`)
    }
  } finally {
    server.close()
  }
})
