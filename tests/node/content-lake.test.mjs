// The local Content Lake (local/content-lake/server.mjs over store.mjs), driven by the real @sanity/client.
// Each test starts its own lake on port 0 and closes it in `finally`. Time is a manual clock owned by the test, so
// `_updatedAt` moves only when the test says so; nothing sleeps.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {createClient} from '@sanity/client'

import {startContentLake} from '../../local/content-lake/server.mjs'
import {DocumentStore} from '../../local/content-lake/store.mjs'
import {documentTag, typeTag} from '../../local/content-lake/sync-tags.mjs'

const T0 = Date.parse('2026-11-27T10:00:00.250Z')

/** Start a lake with a manual clock, run `fn`, always close. */
async function withLake(options, fn) {
  const clock = {ms: T0}
  const store = new DocumentStore({now: () => clock.ms})
  const lake = await startContentLake({store, ...options})
  try {
    return await fn({lake, store, clock, client: createClient(lake.clientConfig(options.token ? {token: options.token} : {}))})
  } finally {
    await lake.close()
  }
}

/** The rejection of `promise` (fails the test if it resolves). */
async function rejection(promise) {
  try {
    await promise
  } catch (error) {
    return error
  }
  assert.fail('expected the request to be rejected')
}

test('create, patch, createOrReplace, delete: _rev per transaction, _createdAt kept, _updatedAt follows the clock', async () => {
  await withLake({}, async ({lake, store, clock, client}) => {
    const created = await client.create({_id: 'article-1', _type: 'article', title: 'Hello', _rev: 'ignored', _updatedAt: '1999-01-01T00:00:00Z'})
    assert.equal(created._id, 'article-1')
    assert.equal(created.title, 'Hello')
    assert.equal(created._createdAt, '2026-11-27T10:00:00Z')
    assert.equal(created._updatedAt, '2026-11-27T10:00:00Z', 'Sanity keeps _updatedAt to the second; the client cannot set it')
    assert.equal(created._rev, store.history.at(-1).id, '_rev is the transaction id')
    assert.match(created._rev, /^[A-Za-z0-9]{22}$/)

    clock.ms += 61_000
    const patched = await client.patch('article-1').set({title: 'Hello again', 'slug.current': 'hello'}).commit()
    assert.equal(patched.title, 'Hello again')
    assert.deepEqual(patched.slug, {current: 'hello'})
    assert.equal(patched._createdAt, created._createdAt)
    assert.equal(patched._updatedAt, '2026-11-27T10:01:01Z')
    assert.notEqual(patched._rev, created._rev)
    assert.equal(patched._rev, store.history.at(-1).id)

    clock.ms += 1_000
    const replaced = await client.createOrReplace({_id: 'article-1', _type: 'article', title: 'Replaced'})
    assert.equal(replaced.slug, undefined, 'createOrReplace replaces the whole document')
    assert.equal(replaced._createdAt, created._createdAt, 'same _type: _createdAt kept')
    assert.equal(replaced._updatedAt, '2026-11-27T10:01:02Z')
    assert.notEqual(replaced._rev, patched._rev)

    clock.ms += 1_000
    const retyped = await client.createOrReplace({_id: 'article-1', _type: 'page', title: 'Now a page'})
    assert.equal(retyped._createdAt, '2026-11-27T10:01:03Z', 'another _type acts as delete + create (Sanity documents this)')

    const same = await client.createIfNotExists({_id: 'article-1', _type: 'page', title: 'Ignored'})
    assert.equal(same.title, 'Now a page', 'createIfNotExists leaves an existing document alone')
    assert.equal(store.get('article-1').title, 'Now a page')

    const deleted = await client.delete('article-1')
    assert.deepEqual(deleted.results.map(({id, operation}) => ({id, operation})), [{id: 'article-1', operation: 'delete'}])
    assert.equal(deleted.results[0].document.title, 'Now a page', 'the client asks for returnDocuments: the deleted document')
    assert.deepEqual(deleted.documentIds, ['article-1'])
    assert.equal(deleted.transactionId, store.history.at(-1).id)
    assert.equal(await client.getDocument('article-1'), undefined)
    assert.equal(store.get('article-1'), undefined)

    const mutations = lake.log.filter((e) => e.path === '/v2025-05-01/data/mutate/production')
    assert.ok(mutations.every((e) => e.method === 'POST' && e.status === 200 && e.transactionId))
    assert.equal(new Set(mutations.map((e) => e.transactionId)).size, mutations.length, 'a new transaction id per request')
  })
})

test('a publish in one transaction: createOrReplace(published) + delete(drafts.x); onCommit fires once with both changes', async () => {
  await withLake({}, async ({store, clock, client}) => {
    await client.create({_id: 'page-home', _type: 'page', title: 'Home'})
    clock.ms += 5_000
    await client.create({_id: 'drafts.page-home', _type: 'page', title: 'Home, edited'})
    const published = store.get('page-home')
    const draft = store.get('drafts.page-home')

    const seen = []
    const stop = store.onCommit((tx) => seen.push(tx))
    clock.ms += 5_000
    const {_id, _rev, _createdAt, _updatedAt, ...content} = draft
    const result = await client
      .transaction()
      .createOrReplace({...content, _id: 'page-home'})
      .delete('drafts.page-home')
      .commit()
    stop()

    assert.deepEqual(result.results, [
      {id: 'page-home', operation: 'update'},
      {id: 'drafts.page-home', operation: 'delete'},
    ])
    assert.equal(seen.length, 1, 'one transaction, one onCommit call')
    const [tx] = seen
    assert.equal(tx.id, result.transactionId)
    assert.equal(tx.time, '2026-11-27T10:00:10Z')
    assert.deepEqual(tx.changes.map((c) => c.id), ['page-home', 'drafts.page-home'])
    const [pub, del] = tx.changes
    assert.deepEqual(pub.before, published)
    assert.equal(pub.after.title, 'Home, edited')
    assert.equal(pub.after._rev, result.transactionId)
    assert.equal(pub.after._createdAt, published._createdAt)
    assert.equal(pub.after._updatedAt, '2026-11-27T10:00:10Z')
    assert.deepEqual(del.before, draft)
    assert.equal(del.after, null)

    assert.equal(store.get('drafts.page-home'), undefined)
    assert.equal((await client.getDocument('page-home'))._rev, result.transactionId)
  })
})

test('a failed transaction changes nothing and notifies no one', async () => {
  await withLake({}, async ({store, client}) => {
    await client.create({_id: 'a', _type: 'article', title: 'A'})
    const before = store.get('a')
    const history = store.history.length
    let calls = 0
    store.onCommit(() => calls++)
    const error = await rejection(client.transaction().patch('a', (p) => p.set({title: 'changed'})).create({_id: 'b', _type: 'article'}).patch('missing', (p) => p.set({x: 1})).commit())
    assert.equal(error.statusCode, 409)
    assert.equal(error.details.items[0].index, 2, 'the index of the failing mutation')
    assert.deepEqual(store.get('a'), before)
    assert.equal(store.get('b'), undefined)
    assert.equal(store.history.length, history)
    assert.equal(calls, 0)
  })
})

test('queries with params, over GET and (for a long query) POST, answered like Sanity', async () => {
  await withLake({}, async ({lake, client}) => {
    await client
      .transaction()
      .create({_id: 'a1', _type: 'article', title: 'One', n: 1, tags: ['x']})
      .create({_id: 'a2', _type: 'article', title: 'Two', n: 2, tags: ['y']})
      .create({_id: 'p1', _type: 'page', title: 'Page'})
      .commit()

    assert.deepEqual(await client.fetch('*[_type == $type && n >= $min]{_id, title}', {type: 'article', min: 2}), [{_id: 'a2', title: 'Two'}])
    assert.deepEqual(await client.fetch('*[_type == "article" && $tag in tags][0].title', {tag: 'x'}), 'One')
    assert.equal(await client.fetch('count(*[_type == $t])', {t: 'nothing'}), 0)
    assert.equal(await client.fetch('*[_id == "none"][0]'), null)
    assert.equal(await client.fetch('sanity::dataset() + "/" + sanity::projectId()'), 'production/local')
    assert.equal(await client.fetch('now()'), '2026-11-27T10:00:00.250Z', "GROQ's now() is the store's clock")

    const full = await client.fetch('*[_id == $id][0].title', {id: 'p1'}, {filterResponse: false})
    assert.equal(full.result, 'Page')
    assert.equal(typeof full.ms, 'number')
    assert.equal(full.query, '*[_id == $id][0].title', 'filterResponse: false asks for the query back')

    // The client switches to POST {query, params} past ~11 kB of query string.
    const long = 'x'.repeat(12_000)
    assert.deepEqual(await client.fetch('*[_type == $type && $long != ""] | order(_id asc)._id', {type: 'article', long}), ['a1', 'a2'])
    const queries = lake.log.filter((e) => e.path === '/v2025-05-01/data/query/production')
    assert.equal(queries.at(-1).method, 'POST')
    assert.ok(queries.slice(0, -1).every((e) => e.method === 'GET' && e.status === 200))
  })
})

test('perspectives: published by default (API ≥ 2025-02-19), raw shows drafts, drafts overlays them', async () => {
  await withLake({}, async ({lake, client}) => {
    await client
      .transaction()
      .create({_id: 'a', _type: 'article', title: 'Published A'})
      .create({_id: 'drafts.a', _type: 'article', title: 'Draft A'})
      .create({_id: 'drafts.b', _type: 'article', title: 'Draft-only B'})
      .create({_id: 'versions.summer.a', _type: 'article', title: 'Summer A'})
      .commit()
    const q = '*[_type == "article"] | order(_id asc){_id, title}'

    assert.deepEqual(await client.fetch(q), [{_id: 'a', title: 'Published A'}])
    assert.ok(!lake.log.at(-1).search.includes('perspective'), '@sanity/client sends no perspective unless configured')
    assert.deepEqual(await client.fetch(q, {}, {perspective: 'published'}), [{_id: 'a', title: 'Published A'}])
    assert.deepEqual((await client.fetch(q, {}, {perspective: 'raw'})).map((d) => d._id), ['a', 'drafts.a', 'drafts.b', 'versions.summer.a'])
    assert.deepEqual(await client.fetch('*[_type == "article"] | order(_id asc){_id, _originalId, title}', {}, {perspective: 'drafts'}), [
      {_id: 'a', _originalId: 'drafts.a', title: 'Draft A'},
      {_id: 'b', _originalId: 'drafts.b', title: 'Draft-only B'},
    ])
    assert.deepEqual(await client.fetch(q, {}, {perspective: ['summer', 'drafts']}), [
      {_id: 'a', title: 'Summer A'},
      {_id: 'b', title: 'Draft-only B'},
    ])

    // Older API versions default to raw, as Sanity does.
    const old = createClient(lake.clientConfig({apiVersion: '2021-06-07'}))
    assert.equal((await old.fetch(q)).length, 4)
  })
})

test('getDocument and getDocuments: by id, drafts included, missing ones null/undefined', async () => {
  await withLake({}, async ({lake, client}) => {
    await client.transaction().create({_id: 'a', _type: 'article', title: 'A'}).create({_id: 'drafts.a', _type: 'article', title: 'Draft A'}).commit()
    assert.equal((await client.getDocument('a')).title, 'A')
    assert.equal((await client.getDocument('drafts.a')).title, 'Draft A')
    assert.equal(await client.getDocument('nope'), undefined)
    const docs = await client.getDocuments(['drafts.a', 'nope', 'a'])
    assert.deepEqual(docs.map((d) => d?.title ?? null), ['Draft A', null, 'A'])
    const {responseBytes, ...entry} = lake.log.at(-1)
    assert.deepEqual(entry, {method: 'GET', path: '/v2025-05-01/data/doc/production/drafts.a,nope,a', search: '', status: 200, requestBytes: 0})
    assert.ok(responseBytes > 0, 'the answer\'s size is logged')
  })
})

test('errors surface as rejections with useful messages', async () => {
  await withLake({}, async ({store, client}) => {
    const syntax = await rejection(client.fetch('*[_type == "article"]{title,'))
    assert.equal(syntax.statusCode, 400)
    assert.match(syntax.message, /^GROQ query parse error:\n> 1 \| \*\[_type == "article"\]\{title,\n.*\^/)
    assert.equal(syntax.details.type, 'queryParseError')
    assert.equal(syntax.details.query, '*[_type == "article"]{title,')

    const param = await rejection(client.fetch('*[_type == $type]'))
    assert.equal(param.statusCode, 400)
    assert.match(param.message, /param \$type referenced, but not provided/)

    const unknown = await rejection(client.fetch('*[nope::thing()]'))
    assert.equal(unknown.statusCode, 400)
    assert.match(unknown.message, /Undefined namespace: nope/)

    const missing = await rejection(client.patch('ghost').set({title: 'x'}).commit())
    assert.equal(missing.statusCode, 409)
    assert.match(missing.message, /^Mutation failed: The document with the ID "ghost" was not found/)
    assert.equal(missing.details.items[0].error.type, 'documentNotFoundError')

    const doc = await client.create({_id: 'a', _type: 'article', title: 'A'})
    const stale = await rejection(client.patch('a').ifRevisionId('old-revision').set({title: 'B'}).commit())
    assert.equal(stale.statusCode, 409)
    assert.match(stale.message, new RegExp(`Document "a" has unexpected revision ID \\("${doc._rev}"\\), expected "old-revision"`))
    assert.deepEqual(stale.details.items[0].error, {
      type: 'documentRevisionIDDoesNotMatchError',
      id: 'a',
      currentRevisionID: doc._rev,
      expectedRevisionID: 'old-revision',
      description: `Document "a" has unexpected revision ID ("${doc._rev}"), expected "old-revision"`,
    })
    assert.equal(store.get('a').title, 'A')
    const ok = await client.patch('a').ifRevisionId(doc._rev).set({title: 'B'}).commit()
    assert.equal(ok.title, 'B', 'the right revision passes')

    const exists = await rejection(client.create({_id: 'a', _type: 'article'}))
    assert.equal(exists.statusCode, 409)
    assert.match(exists.message, /Document by ID "a" already exists/)

    const untyped = await rejection(client.mutate([{create: {_id: 'c', title: 'no type'}}]))
    assert.equal(untyped.statusCode, 400)
    assert.match(untyped.message, /Document does not have a type/)

    const badPath = await rejection(client.patch('a').set({'items[title == "x"].n': 1}).commit())
    assert.equal(badPath.statusCode, 400)
    assert.match(badPath.message, /not supported by the local Content Lake/)
  })
})

test('a private dataset: 401 without a token or with a wrong one, works with it', async () => {
  await withLake({token: 'sk-read-write'}, async ({lake, client}) => {
    const anonymous = createClient(lake.clientConfig())
    const wrong = createClient(lake.clientConfig({token: 'sk-wrong'}))

    const noToken = await rejection(anonymous.fetch('*'))
    assert.equal(noToken.statusCode, 401)
    assert.match(noToken.message, /^Unauthorized - /)
    assert.deepEqual(Object.keys(noToken.response.body).sort(), ['error', 'message', 'statusCode'])
    assert.equal((await rejection(anonymous.getDocument('a'))).statusCode, 401)
    assert.equal((await rejection(anonymous.create({_type: 'article'}))).statusCode, 401)

    const badToken = await rejection(wrong.fetch('*'))
    assert.equal(badToken.statusCode, 401)
    assert.equal(badToken.message, 'Unauthorized - Session not found')

    assert.equal(lake.store.all().length, 0, 'nothing was written without the token')
    const created = await client.create({_type: 'article', title: 'With token'})
    assert.match(created._id, /^[A-Za-z0-9]{22}$/, 'no _id: the lake picks one')
    assert.deepEqual(await client.fetch('*[_type == "article"].title'), ['With token'])
    assert.deepEqual(
      lake.log.map((e) => e.status),
      [401, 401, 401, 401, 200, 200],
    )
  })
})

test('onCommit: once per transaction with every changed document; a dry run commits nothing, a no-op changes nothing', async () => {
  await withLake({}, async ({store, clock, client}) => {
    const seen = []
    store.onCommit((tx) => seen.push(tx))

    const release = client.transaction()
    for (let i = 1; i <= 3; i++) release.createOrReplace({_id: `item-${i}`, _type: 'article', title: `Item ${i}`})
    const first = await release.commit()
    assert.equal(seen.length, 1)
    assert.deepEqual(seen[0].changes.map((c) => [c.id, c.before, c.after?.title]), [
      ['item-1', null, 'Item 1'],
      ['item-2', null, 'Item 2'],
      ['item-3', null, 'Item 3'],
    ])
    assert.ok(seen[0].changes.every((c) => c.after._rev === first.transactionId))

    clock.ms += 2_000
    await client.patch('item-2').set({title: 'Item two'}).commit()
    assert.equal(seen.length, 2)
    assert.deepEqual(seen[1].changes.map((c) => [c.id, c.before.title, c.after.title, c.after._updatedAt]), [['item-2', 'Item 2', 'Item two', '2026-11-27T10:00:02Z']])

    const dry = await client.create({_id: 'dry', _type: 'article'}, {dryRun: true})
    assert.equal(dry._id, 'dry', 'a dry run answers as if it ran')
    assert.equal(store.get('dry'), undefined)
    assert.equal(seen.length, 2, 'a dry run commits nothing and notifies no one')

    const rev = store.get('item-1')._rev
    await client.createIfNotExists({_id: 'item-1', _type: 'article', title: 'Ignored'})
    assert.equal(seen.length, 3, 'a transaction is still one, even when it changes nothing')
    assert.deepEqual(seen[2].changes, [])
    assert.equal(store.get('item-1')._rev, rev, 'an unchanged document keeps its _rev')

    // Deleting by query: one transaction over every matching document.
    clock.ms += 2_000
    const gone = await client.delete({query: '*[_type == "article" && title match $t]', params: {t: 'Item*'}})
    assert.deepEqual(gone.documentIds.sort(), ['item-1', 'item-2', 'item-3'])
    assert.equal(seen.length, 4)
    assert.deepEqual(seen[3].changes.map((c) => [c.id, c.after]).sort(), [['item-1', null], ['item-2', null], ['item-3', null]])
    assert.equal(store.all().length, 0)
  })
})

test('patch operations: setIfMissing, unset, inc/dec, insert and _key paths; custom transaction ids', async () => {
  await withLake({}, async ({store, client}) => {
    await client.create({_id: 'p', _type: 'page', title: 'P', views: 10, tags: ['a'], blocks: [{_key: 'k1', text: 'one'}, {_key: 'k2', text: 'two'}]})
    const doc = await client
      .patch('p')
      .setIfMissing({title: 'ignored', subtitle: 'S'})
      .unset(['tags[0]'])
      .inc({views: 5})
      .dec({likes: 1})
      .set({'blocks[_key=="k2"].text': 'TWO'})
      .commit()
    assert.equal(doc.title, 'P')
    assert.equal(doc.subtitle, 'S')
    assert.deepEqual(doc.tags, [])
    assert.equal(doc.views, 15)
    assert.equal(doc.likes, undefined, 'dec on a missing field does nothing')
    assert.deepEqual(doc.blocks.map((b) => b.text), ['one', 'TWO'])

    // One insert per patch: the client merges a second insert() into the first (ambiguous, refused).
    assert.deepEqual((await client.patch('p').append('tags', ['b', 'c']).commit()).tags, ['b', 'c'])
    const inserted = await client.patch('p').insert('before', 'blocks[0]', [{_key: 'k0', text: 'zero'}]).commit()
    assert.deepEqual(inserted.blocks.map((b) => b._key), ['k0', 'k1', 'k2'])
    const replacedBlock = await client.patch('p').insert('replace', 'blocks[_key=="k1"]', [{_key: 'k1b', text: 'uno'}]).commit()
    assert.deepEqual(replacedBlock.blocks.map((b) => b._key), ['k0', 'k1b', 'k2'])
    const ambiguous = await rejection(client.patch('p').append('tags', ['d']).prepend('tags', ['z']).commit())
    assert.equal(ambiguous.statusCode, 400)
    assert.match(ambiguous.message, /insert takes exactly one of before, after, replace/)

    const named = await client.transaction().transactionId('my-transaction').patch('p', (p) => p.set({title: 'Q'})).commit()
    assert.equal(named.transactionId, 'my-transaction')
    assert.equal(store.get('p')._rev, 'my-transaction')
    const reused = await rejection(client.transaction().transactionId('my-transaction').patch('p', (p) => p.set({title: 'R'})).commit())
    assert.equal(reused.statusCode, 409)
    assert.match(reused.message, /Transaction ID "my-transaction" already exists/)
  })
})

test('the wrong dataset, project or endpoint answers 404 with a message', async () => {
  await withLake({}, async ({lake}) => {
    const other = await rejection(createClient(lake.clientConfig({dataset: 'staging'})).fetch('*'))
    assert.equal(other.statusCode, 404)
    assert.match(other.message, /Dataset "staging" not found/)
    const project = await rejection(createClient(lake.clientConfig({projectId: 'abc123'})).fetch('*'))
    assert.equal(project.statusCode, 404)
    assert.match(project.message, /Project "abc123" not found/)
    const listen = await fetch(`${lake.url}/v2025-05-01/data/listen/production?query=*`)
    assert.equal(listen.status, 404)
    assert.match((await listen.json()).message, /does not serve GET/)
  })
})

test('sync tags: a response carries the tags of the documents it read; a commit announces the tags it invalidates', async () => {
  await withLake({}, async ({lake, client, clock}) => {
    const doc = (id) => documentTag('local', 'production', id)
    const type = (t) => typeTag('local', 'production', t)
    const ref = (id) => ({_type: 'reference', _ref: id})
    await client
      .transaction()
      .create({_id: 'ada', _type: 'person', name: 'Ada'})
      .create({_id: 'grace', _type: 'person', name: 'Grace'})
      .create({_id: 'a1', _type: 'article', title: 'One', slug: {current: 'one'}, author: ref('ada')})
      .create({_id: 'a2', _type: 'article', title: 'Two', slug: {current: 'two'}, author: ref('grace')})
      .create({_id: 'about', _type: 'page', title: 'About', slug: {current: 'about'}})
      .create({_id: 'drafts.a1', _type: 'article', title: 'One (draft)', slug: {current: 'one'}, author: ref('ada')})
      .commit()
    // Five published documents created (the draft is not announced): their tags and their three types'.
    assert.deepEqual(lake.liveEvents.map((e) => e.tags), [[...['ada', 'grace', 'a1', 'a2', 'about'].map(doc), ...['person', 'article', 'page'].map(type)].sort()])
    const heard = []
    const stop = lake.onSyncTags((event) => heard.push(event))

    // The article page a next-sanity app would fetch: its filters read the slug of both articles (not the page's:
    // the type filter comes first), `->` reads the one author it shows.
    const page = `*[_type == "article"][slug.current == $slug][0]{title, "author": author->name}`
    const one = await client.fetch(page, {slug: 'one'}, {filterResponse: false})
    assert.deepEqual(one.result, {title: 'One', author: 'Ada'})
    assert.deepEqual(one.syncTags, [doc('a1'), doc('a2'), doc('ada'), type('article'), type('person')].sort())
    assert.ok(one.syncTags.every((t) => /^s1:[A-Za-z0-9_-]{8}$/.test(t)), 'opaque, like Sanity\'s')
    // A whole document returned is read; a count reads no document, so it carries no tag (a gap of this rule).
    const about = await client.fetch('*[_id == "about"][0]', {}, {filterResponse: false})
    assert.deepEqual(about.syncTags, [doc('about'), type('page')].sort())
    assert.deepEqual((await client.fetch('count(*[_type == "article"])', {}, {filterResponse: false})).syncTags, [])
    // groq-js evaluates both sides of `&&`: this form looks up `slug` on every document, the persons' too.
    const wide = await client.fetch(`*[_type == "article" && slug.current == $slug][0]{title}`, {slug: 'one'}, {filterResponse: false})
    assert.deepEqual(wide.syncTags, [...['a1', 'a2', 'about', 'ada', 'grace'].map(doc), ...['article', 'page', 'person'].map(type)].sort())
    // The default answer is the result alone; API v1 answers carry no tags; `lastLiveEventId` is accepted.
    assert.deepEqual(await client.fetch(page, {slug: 'one'}), {title: 'One', author: 'Ada'})
    assert.equal((await createClient(lake.clientConfig({apiVersion: '1'})).fetch('*[_id == "about"][0]', {}, {filterResponse: false})).syncTags, undefined)
    const fresh = await client.fetch(page, {slug: 'two'}, {filterResponse: false, lastLiveEventId: lake.liveEvents[0].id})
    assert.deepEqual(fresh.result, {title: 'Two', author: 'Grace'})
    assert.ok(lake.log.every((e) => e.status === 200), JSON.stringify(lake.log.filter((e) => e.status !== 200)))

    const hits = (response) => heard.at(-1).tags.filter((t) => response.syncTags.includes(t))
    // An edit of the author the page shows: that person's tag, which the page carries.
    clock.ms += 1_000
    const edit = await client.patch('ada').set({name: 'Ada Lovelace'}).commit()
    assert.deepEqual(heard.at(-1), {id: edit._rev, at: clock.ms, tags: [doc('ada')]})
    assert.deepEqual(hits(one), [doc('ada')])
    assert.deepEqual(hits(about), [])
    // Another author's edit does not touch page one (it did not read Grace).
    await client.patch('grace').set({name: 'Grace Hopper'}).commit()
    assert.deepEqual(heard.at(-1).tags, [doc('grace')])
    assert.deepEqual(hits(one), [])
    // A draft invalidates nothing; its publish (one transaction) invalidates the published document.
    const before = heard.length
    await client.patch('drafts.a1').set({title: 'One, edited'}).commit()
    assert.equal(heard.length, before, 'drafts are not announced')
    await client.transaction().createOrReplace({_id: 'a1', _type: 'article', title: 'One, edited', slug: {current: 'one'}, author: ref('ada')}).delete('drafts.a1').commit()
    assert.deepEqual(heard.at(-1).tags, [doc('a1')])
    // A new article may match the page's filter: a create invalidates its type; so does a delete.
    await client.create({_id: 'a3', _type: 'article', title: 'Three', slug: {current: 'one'}})
    assert.deepEqual(heard.at(-1).tags, [doc('a3'), type('article')].sort())
    assert.deepEqual(hits(one).sort(), [type('article')])
    await client.delete('about')
    assert.deepEqual(heard.at(-1).tags, [doc('about'), type('page')].sort())
    assert.deepEqual(hits(one), [])
    // Every announcement is also kept, in commit order, with its transaction's id.
    assert.deepEqual(lake.liveEvents.slice(1), heard)
    stop()
    await client.patch('grace').set({name: 'G.'}).commit()
    assert.equal(lake.liveEvents.length, heard.length + 2, 'unsubscribed: heard no more, still kept')
  })
})
