// What looking up dependents costs, measured with the real Function handler against a local Content Lake and the
// loopback Fly stand-in: how many queries a change makes, the bytes of each query and its answer, and how much the
// signed push grows. docs/dependents.md states these figures in its "What it costs" table; this test measures them
// again and fails when the table no longer says what the run does.
import {after, before, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {readFileSync} from 'node:fs'
import {join} from 'node:path'
import {handler} from '../../function.ts'
import {startContentLake} from '../../local/content-lake/server.mjs'
import {DocumentStore} from '../../local/content-lake/store.mjs'
import {startFlyStandIn} from './support/fly-stand-in.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET, ROOT} from './support/run.mjs'

const TOKEN = 'sk-local-robot-read-token'
const ref = (id) => ({_type: 'reference', _ref: id})
const post = (n, extra) => ({_id: `post-${n}`, _type: 'post', title: `Post ${n}`, slug: {_type: 'slug', current: `post-${n}`}, ...extra})

/** The documents: an author shown by three posts (one listed on a page), a category shown by 120 posts. */
function dataset() {
  const docs = [
    {_id: 'person-ada', _type: 'person', name: 'Ada'},
    {_id: 'category-big', _type: 'category', title: 'Big'},
    ...[1, 2, 3].map((n) => post(n, {author: ref('person-ada')})),
    {_id: 'page-reading', _type: 'page', title: 'Reading list', slug: {_type: 'slug', current: 'reading'}, items: [{_key: 'a', ...ref('post-1')}]},
  ]
  for (let n = 100; n < 220; n++) docs.push(post(n, {category: ref('category-big')}))
  return docs
}

/** The Function's event data for a published edit of `doc` (the blueprint's projection, by hand). */
const eventOf = (doc, rev) => ({...doc, _rev: rev, _updatedAt: '2026-11-27T10:00:00Z', op: 'update', slug: doc.slug?.current ?? null, previousSlug: doc.slug?.current ?? null})

/** The rows of docs/dependents.md's cost table: label → numbers. */
function statedCosts() {
  const text = readFileSync(join(ROOT, 'docs/dependents.md'), 'utf8')
  const rows = {}
  for (const m of text.matchAll(/^\| ([^|]+?) \| (\d+) \| ([\d ,]+) \| ([\d ,]+) \| ([\d ,]+) \| ([\d ,]+) \| ([\d ,]+) \|$/gm)) {
    const n = (s) => s.split(',').map((x) => Number(x.trim()))
    rows[m[1]] = {queries: Number(m[2]), request: n(m[3]), result: n(m[4]), answer: n(m[5]), push: Number(m[6].trim()), pushWithout: Number(m[7].trim())}
  }
  return rows
}

describe('dependents: what a change costs, as docs/dependents.md states it', () => {
  let lake
  let standIn
  const saved = {...process.env}
  before(async () => {
    const store = new DocumentStore({now: () => Date.parse('2026-11-27T09:00:00Z')})
    store.transaction(dataset().map((doc) => ({createOrReplace: doc})))
    lake = await startContentLake({store, token: TOKEN})
    standIn = await startFlyStandIn()
  })
  after(async () => {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
    await lake?.close()
    await standIn?.close()
  })

  /** One run of the handler for an edit of `id`; what went to Sanity and to the Machines. */
  async function measure(id, env = {}) {
    for (const key of Object.keys(process.env)) if (key.startsWith('FLY_') || key.startsWith('SANITY_')) delete process.env[key]
    Object.assign(process.env, {
      FLY_APP_NAME: 'my-fly-app',
      FLY_API_URL: standIn.url,
      FLY_APP_URL: standIn.url,
      FLY_API_TOKEN,
      FLY_SYNC_SECRET,
      FLY_SYNC_ROUTES: 'post=/posts/{slug},page=/{slug}',
      SANITY_API_HOST: lake.url,
      ...env,
    })
    standIn.reset()
    const from = lake.log.length
    const logged = []
    const original = console.log
    console.log = (line) => logged.push(String(line))
    let report
    try {
      report = await handler({
        context: {local: true, clientOptions: {projectId: 'local', dataset: 'production', token: TOKEN}},
        event: {data: eventOf(lake.store.get(id), "rev-2")},
      })
    } finally {
      console.log = original
    }
    const queries = lake.log.slice(from)
    assert.ok(queries.every((q) => q.status === 200 && q.path === '/v2025-02-19/data/query/production'), JSON.stringify(queries))
    assert.ok(!logged.some((line) => line.includes(TOKEN)), 'the token is never logged')
    const pushes = standIn.syncs()
    assert.equal(new Set(pushes.map((p) => p.raw)).size, 1, 'every Machine gets the same body')
    return {report, queries, push: pushes[0]}
  }

  test('an author shown by three posts: one query; its routes and tags ride in the push', async () => {
    const run = await measure('person-ada')
    const without = await measure('person-ada', {FLY_SYNC_DEPENDENTS_DEPTH: '0'})
    assert.equal(without.queries.length, 0, 'depth 0: no query')
    assert.deepEqual([...run.report.targets[0].dependents.pushed].sort(), ['post-1', 'post-2', 'post-3'])
    assert.deepEqual([...run.push.body.routes.invalidate].sort(), ['/posts/post-1', '/posts/post-2', '/posts/post-3'])
    assertStated('an author shown by three posts', run, without)
  })

  test('two levels: the page listing one of those posts too, with one more query', async () => {
    const run = await measure('person-ada', {FLY_SYNC_DEPENDENTS_DEPTH: '2'})
    const without = await measure('person-ada', {FLY_SYNC_DEPENDENTS_DEPTH: '0'})
    assert.equal(run.queries.length, 2, 'one query per level')
    assert.ok(run.push.body.routes.invalidate.includes('/reading'), JSON.stringify(run.push.body.routes))
    assertStated('the same, two levels', run, without)
  })

  test('a category shown by 120 posts: the cap (50) rides in the push, the other 70 by their type\'s tag', async () => {
    const run = await measure('category-big')
    const without = await measure('category-big', {FLY_SYNC_DEPENDENTS_DEPTH: '0'})
    assert.equal(run.push.body.dependents.documents.length, 50)
    assert.deepEqual(run.push.body.dependents.more, {count: 70, types: ['post']})
    assert.ok(run.push.body.tags.includes('post'), 'the type tag covers the ones left out')
    assertStated('a category shown by 120 posts (cap 50)', run, without)
  })

  /**
   * The table's row `label` says what was measured: the number of queries, the request and result bytes exactly
   * (the query text, its parameters and the documents are fixed), the whole answer within 2 % (it carries the
   * lake's timing), the push bytes with and without dependents exactly.
   */
  function assertStated(label, run, without) {
    const row = statedCosts()[label]
    const measured = {
      queries: run.queries.length,
      request: run.queries.map((q) => q.requestBytes),
      result: run.queries.map((q) => q.resultBytes),
      answer: run.queries.map((q) => q.responseBytes),
      push: Buffer.byteLength(run.push.raw),
      pushWithout: Buffer.byteLength(without.push.raw),
    }
    assert.ok(row, `docs/dependents.md has no row "${label}"; measured ${JSON.stringify(measured)}`)
    assert.equal(row.queries, measured.queries, `${label}: queries (measured ${JSON.stringify(measured)})`)
    assert.deepEqual(row.request, measured.request, `${label}: request bytes (measured ${JSON.stringify(measured)})`)
    assert.deepEqual(row.result, measured.result, `${label}: result bytes (measured ${JSON.stringify(measured)})`)
    row.answer.forEach((stated, i) => {
      assert.ok(Math.abs(stated - measured.answer[i]) <= stated * 0.02, `${label}: answer bytes ${stated}, measured ${measured.answer[i]}`)
    })
    assert.equal(row.push, measured.push, `${label}: push bytes (measured ${JSON.stringify(measured)})`)
    assert.equal(row.pushWithout, measured.pushWithout, `${label}: push bytes without dependents (measured ${JSON.stringify(measured)})`)
  }
})
