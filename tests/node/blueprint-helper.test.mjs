// flySyncFunction (blueprint/index.ts, `sanity-fly-sync/blueprint`): the resource a team adds to its own blueprint.
// What it makes (events, filter, projection, limits, env), that the core reads that env as meant, and that a bad
// option is refused naming the option, before anything is deployed. The CLI runs it in blueprint-project.test.mjs.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {evaluate, parse} from 'groq-js'
import {BUDGET_HEADROOM_SECONDS, DEFAULT_SRC, flySyncFunction, flySyncResumeFunction} from '../../blueprint/index.ts'
import {loadWasm, SyncEngine} from '../../wasm.ts'

loadWasm()

const team = () => flySyncFunction({app: 'my-fly-app', types: ['post', 'page'], routes: {post: '/posts/{slug}', page: ['/{slug}', '/{locale}/{slug}']}})

async function eventData(fn, {before = null, after = null}) {
  const tree = parse(`*[${fn.event.filter}]${fn.event.projection}`, {mode: 'delta'})
  const [data] = await (await evaluate(tree, {dataset: [after ?? before], before, after})).get()
  return data
}

test('the resource: a document Function on create, update and delete, from the prebuilt folder in node_modules', () => {
  const fn = team()
  assert.equal(fn.type, 'sanity.function.document')
  assert.equal(fn.name, 'fly-sync')
  assert.equal(fn.src, DEFAULT_SRC)
  assert.equal(fn.src, 'node_modules/sanity-fly-sync/function')
  assert.equal(fn.runtime, 'nodejs24.x')
  assert.deepEqual(fn.event.on, ['create', 'update', 'delete'])
  assert.equal(fn.timeout, 120)
  assert.deepEqual(fn.env, {
    FLY_APP_NAME: 'my-fly-app',
    FLY_SYNC_ROUTES: 'post=/posts/{slug},page=/{slug}|/{locale}/{slug}',
    FLY_SYNC_BUDGET_MS: String((120 - BUDGET_HEADROOM_SECONDS) * 1000),
    FLY_SYNC_RESUME_FUNCTION: 'fly-sync-resume',
  })
  const custom = flySyncFunction({app: 'web', types: ['post'], name: 'sync-web', timeout: 60, restartTypes: ['settings'], env: {FLY_MAX_UNAVAILABLE: '2'}, src: 'vendor/fly-sync'})
  assert.equal(custom.name, 'sync-web')
  assert.equal(custom.src, 'vendor/fly-sync')
  assert.deepEqual(custom.env, {FLY_APP_NAME: 'web', FLY_RESTART_TYPES: 'settings', FLY_SYNC_BUDGET_MS: '40000', FLY_SYNC_RESUME_FUNCTION: 'sync-web-resume', FLY_MAX_UNAVAILABLE: '2'})
  const resume = flySyncResumeFunction({app: 'web', types: ['post'], name: 'sync-web', timeout: 60, restartTypes: ['settings'], src: 'vendor/fly-sync'})
  assert.deepEqual([resume.type, resume.name, resume.src, resume.timeout], ['sanity.function.pubsub', 'sync-web-resume', 'vendor/fly-sync', 60])
  assert.equal(resume.env.FLY_SYNC_RESUME_FUNCTION, 'sync-web-resume')
})

test('filter and projection (groq-js, delta mode): published documents of the named types, with what the core reads', async () => {
  const fn = team()
  const before = {_id: 'post-1', _type: 'post', _rev: 'r1', _updatedAt: '2026-11-27T10:00:00Z', title: 'Old', slug: {current: 'old'}, language: 'en'}
  const after = {...before, _rev: 'r2', title: 'New', slug: {current: 'new'}}
  const data = await eventData(fn, {before, after})
  assert.equal(data.op, 'update')
  assert.equal(data.slug, 'new')
  assert.equal(data.previousSlug, 'old')
  assert.equal(data.locale, 'en')
  assert.equal(data.title, 'New', 'the whole document rides along')
  assert.equal(await eventData(fn, {after: {...after, _type: 'author'}}), undefined)
  assert.equal(await eventData(fn, {after: {...after, _id: 'drafts.post-1'}}), undefined)
  assert.equal(await eventData(fn, {after: {...after, _id: 'versions.r1.post-1'}}), undefined)
})

test('the core reads the env the helper writes: routes per type, and a template it refuses is named', () => {
  const secrets = {FLY_API_TOKEN: 'fm2_test', FLY_SYNC_SECRET: 'helper-secret-0123456789', FLY_API_URL: 'http://127.0.0.1:9', FLY_APP_URL: 'http://127.0.0.1:9'}
  // The handler's event as the shim hands it to the core: JSON text.
  const event = JSON.stringify({data: {_id: 'page-1', _type: 'page', _rev: 'r1', _updatedAt: '2026-11-27T10:00:00Z', slug: 'about', locale: 'de', op: 'create'}})
  const engine = SyncEngine.fromFunctionEvent({...team().env, ...secrets}, event, "null", Date.now(), 1)
  const list = engine.poll(Date.now())
  assert.equal(list.batches[0].url, 'http://127.0.0.1:9/v1/apps/my-fly-app/machines')
  engine.handleResponse(list.batches[0].ids[0], 200, [], new TextEncoder().encode(JSON.stringify([{id: 'm1', state: 'started', region: 'ord'}])), Date.now())
  const push = JSON.parse(new TextDecoder().decode(engine.body(engine.poll(Date.now()).batches[0].body)))
  assert.deepEqual(push.routes.current, ['/about', '/de/about'])

  const bad = flySyncFunction({app: 'web', types: ['page'], routes: {page: '/{nope}'}})
  assert.throws(() => SyncEngine.fromFunctionEvent({...bad.env, ...secrets}, event, "null", Date.now(), 1), (e) => e.field === 'FLY_SYNC_ROUTES')
})

test('several targets: FLY_SYNC_CONFIG instead of app and routes', () => {
  const config = JSON.stringify({version: 1, targets: [{app: 'web', routes: {post: ['/posts/{slug}']}}, {app: 'feed', fanOut: 'one'}]})
  const fn = flySyncFunction({types: ['post'], env: {FLY_SYNC_CONFIG: config}})
  assert.deepEqual(Object.keys(fn.env).sort(), ['FLY_SYNC_BUDGET_MS', 'FLY_SYNC_CONFIG', 'FLY_SYNC_RESUME_FUNCTION'])
})

test('bad options are refused with the option named and the value never echoed', () => {
  const cases = [
    [{app: 'web'}, /`types`: expected a list of document type names, got nothing/],
    [{app: 'web', types: []}, /`types`: expected a non-empty list/],
    [{app: 'web', types: ['post', 7]}, /`types\[1\]`: expected a document type name, got a number/],
    [{types: ['post']}, /`app`: expected the Fly app to sync/],
    [{app: 'web', types: ['post'], routes: {page: '/{slug}'}}, /`routes\.page`: expected a type listed in `types`/],
    [{app: 'web', types: ['post'], routes: {post: 'posts/{slug}'}}, /`routes\.post\[0\]`: expected a path template starting with `\/`/],
    [{app: 'web', types: ['post'], routes: {post: ['/a,b']}}, /`routes\.post\[0\]`: expected a path template without `,` or `\|`/],
    [{app: 'web', types: ['post'], timeout: 10}, /`timeout`: expected whole seconds from 30 to 900/],
    [{app: 'web', types: ['post'], env: {FLY_SYNC_SECRET: 'hunter2-hunter2-hunter2'}}, /`env\.FLY_SYNC_SECRET`: expected no secret in a blueprint \(set it with `sanity functions env add fly-sync FLY_SYNC_SECRET …`\)/],
    [{app: 'web', types: ['post'], env: {FLY_SYNC_CONFIG: '{}'}}, /`app`: expected nothing beside `env\.FLY_SYNC_CONFIG`/],
  ]
  for (const [options, message] of cases) {
    assert.throws(() => flySyncFunction(options), (e) => {
      assert.ok(e instanceof Error)
      assert.match(e.message, message)
      assert.ok(!e.message.includes('hunter2'), 'no value echoed')
      return true
    })
  }
})

test('dependents and the robot token: the lookup configured by option, refused options named, the core reads the same', () => {
  const base = {app: 'web', types: ['post', 'author']}
  const fn = flySyncFunction({...base, dependents: {depth: 2, cap: 20, types: ['post']}, robotToken: '$.resources.fly-sync-reader'})
  assert.equal(fn.robotToken, '$.resources.fly-sync-reader')
  assert.deepEqual([fn.env.FLY_SYNC_DEPENDENTS_DEPTH, fn.env.FLY_SYNC_DEPENDENTS_CAP, fn.env.FLY_SYNC_DEPENDENT_TYPES], ['2', '20', 'post'])
  assert.equal(flySyncResumeFunction({...base, robotToken: '$.resources.r'}).robotToken, '$.resources.r', 'the resume run reads as the same robot')
  assert.equal(flySyncFunction({...base, dependents: false}).env.FLY_SYNC_DEPENDENTS_DEPTH, '0')
  assert.equal(flySyncFunction(base).env.FLY_SYNC_DEPENDENTS_DEPTH, undefined, "the core's default (one level)")
  for (const [dependents, field] of [[{depth: 4}, 'dependents.depth'], [{cap: 0}, 'dependents.cap'], [{types: 'post'}, 'dependents.types'], [true, 'dependents']]) {
    assert.throws(() => flySyncFunction({...base, dependents}), (e) => e.message.includes(`\`${field}\``), field)
  }
  assert.throws(() => flySyncFunction({...base, robotToken: ''}), /`robotToken`/)
  // What the helper writes, the core accepts.
  const event = JSON.stringify({data: {_id: 'author-1', _type: 'author', _rev: 'r', _updatedAt: '2026-11-27T10:00:00Z'}})
  SyncEngine.fromFunctionEvent({...fn.env, FLY_API_TOKEN: 'fm2_x', FLY_SYNC_SECRET: 'a-secret-of-sixteen-chars'}, event, 'null', Date.now(), 1).free()
})

test('the sync-tag Function: same code and settings, a short budget (clients wait on its done), Sanity validates it', async () => {
  const {flySyncTagFunction, SYNC_TAG_BUDGET_SECONDS} = await import('../../blueprint/index.ts')
  const fn = flySyncTagFunction({app: 'web', types: ['post'], name: 'sync-web', robotToken: '$.resources.reader', src: 'vendor/fly-sync'})
  assert.deepEqual([fn.type, fn.name, fn.src, fn.runtime], ['sanity.function.sync-tag-invalidate', 'sync-web-tags', 'vendor/fly-sync', 'nodejs24.x'])
  assert.equal(fn.env.FLY_SYNC_BUDGET_MS, String(SYNC_TAG_BUDGET_SECONDS * 1000))
  assert.equal(fn.timeout, SYNC_TAG_BUDGET_SECONDS + BUDGET_HEADROOM_SECONDS)
  assert.equal(fn.env.FLY_APP_NAME, 'web')
  assert.equal(fn.robotToken, '$.resources.reader')
  assert.throws(() => flySyncTagFunction({types: ['post']}), /`app`/, 'the same options, checked the same way')
})
