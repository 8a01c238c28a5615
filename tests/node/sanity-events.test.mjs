// The events the simulation and the tests feed the Function come from the repo's own sanity.blueprint.ts,
// evaluated with groq-js in delta mode as Sanity does (local/sanity-events.mjs). These checks pin what the
// blueprint must produce for the core: a wrong filter or projection fails here.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {eventsFor, documentFunctions} from '../../local/sanity-events.mjs'

const article = (over = {}) => ({_id: 'article-1', _type: 'article', _rev: 'r1', _createdAt: '2026-11-27T09:00:00Z', _updatedAt: '2026-11-27T09:00:00Z',
  title: 'Hello', slug: {_type: 'slug', current: 'hello'}, language: 'en', cacheTags: ['article:1'], ...over})

test('one document Function, named fly-sync', () => {
  assert.deepEqual(documentFunctions.map((f) => f.name), ['fly-sync'])
})

test('create: the projection carries what the core reads, the document fields too', async () => {
  const [e] = await eventsFor({before: null, after: article()})
  assert.equal(e.name, 'fly-sync')
  assert.equal(e.data.op, 'create')
  assert.equal(e.data.slug, 'hello', 'slug.current projected to a string')
  assert.equal(e.data.previousSlug, null)
  assert.equal(e.data.locale, 'en')
  assert.deepEqual(e.data.cacheTags, ['article:1'])
  for (const key of ['_id', '_type', '_rev', '_updatedAt', 'title']) assert.ok(key in e.data, key)
})

test('update with a rename: the previous slug comes from before()', async () => {
  const [e] = await eventsFor({before: article(), after: article({_rev: 'r2', slug: {_type: 'slug', current: 'hello-world'}})})
  assert.equal(e.data.op, 'update')
  assert.equal(e.data.slug, 'hello-world')
  assert.equal(e.data.previousSlug, 'hello')
})

test('delete: the operation is delete and the last slug is kept', async () => {
  const [e] = await eventsFor({before: article(), after: null})
  assert.equal(e.data.op, 'delete')
  assert.equal(e.data._id, 'article-1')
  assert.equal(e.data.previousSlug, 'hello')
})

test('drafts, versions and other types never reach the Function', async () => {
  assert.deepEqual(await eventsFor({before: null, after: article({_id: 'drafts.article-1'})}), [])
  assert.deepEqual(await eventsFor({before: null, after: article({_id: 'versions.summer.article-1'})}), [])
  assert.deepEqual(await eventsFor({before: null, after: {_id: 'author-1', _type: 'author', name: 'X'}}), [])
})
