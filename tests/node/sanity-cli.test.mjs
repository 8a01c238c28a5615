// The repo's blueprint run by Sanity's own CLI (@sanity/runtime-cli), offline, against a loopback stand-in for
// the Fly Machines API and the app: `functions test`, `functions dev` + POST /invoke, and the deploy zip of
// `functions build`. Needs `npm run build` (dist/functions/fly-sync). The cases run one after another: the CLI
// writes a temporary package.json into the Function folder while it runs one. A run whose context names a Sanity
// project looks up the documents referencing the change there: SANITY_API_HOST points that query at a local
// Content Lake (local/content-lake) on loopback, never at Sanity.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {mkdtempSync, readdirSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import AdmZip from 'adm-zip'
import {startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {freePort, ROOT, run, sanityRun, SANITY_RUN, standInEnv, start} from './support/run.mjs'
import {startContentLake} from '../../local/content-lake/server.mjs'
import {DocumentStore} from '../../local/content-lake/store.mjs'

const article = (extra = {}) => ({
  _id: 'article-42',
  _type: 'article',
  _rev: 'rev-1',
  _updatedAt: '2026-11-27T10:00:00Z',
  title: 'Hello',
  slug: {_type: 'slug', current: 'hello'},
  language: 'en',
  cacheTags: ['article:article-42'],
  ...extra,
})

const succeeded = /Function execution succeeded/
const ref = (id, extra = {}) => ({_type: 'reference', _ref: id, ...extra})

/** A local Content Lake holding `docs` (one transaction), on loopback. */
async function lakeWith(docs, options = {}) {
  const store = new DocumentStore()
  store.transaction(docs.map((doc) => ({createOrReplace: doc})))
  return startContentLake({store, ...options})
}

/** The report a run logs last (`{"action":"done","report":…}`). */
function reportIn(output) {
  const done = [...output.matchAll(/"action":"done","report":(\{.*\})\}\s*$/gm)].at(-1)
  assert.ok(done, `no report in:\n${output}`)
  return JSON.parse(done[1])
}

describe('Sanity CLI with the repo blueprint', () => {
  let standIn
  let tmp
  before(async () => {
    standIn = await startFlyStandIn()
    tmp = mkdtempSync(join(tmpdir(), 'fly-sync-cli-'))
  })
  after(async () => {
    await standIn?.close()
    if (tmp) rmSync(tmp, {recursive: true, force: true})
  })
  beforeEach(() => standIn.reset())

  test('functions test --file: one signed push per started Machine', async () => {
    // The README's first command. `--file` is joined to the working directory: it must be relative.
    const r = await sanityRun(['functions', 'test', 'fly-sync', '--file', 'examples/events/article.json'], {
      env: standInEnv(standIn.url),
    })
    assert.equal(r.code, 0, r.output)
    assert.match(r.output, succeeded)

    const [body] = await assertOnePushPerStartedMachine(standIn)
    assert.equal(body.op, 'upsert')
    assert.equal(body.id, 'article-42')
    assert.equal(body.type, 'article')
    assert.equal(body.rev, 'rev-1')
    assert.equal(body.idempotencyKey, 'upsert:article-42:rev-1')
    assert.equal(body.locale, 'en', 'projection: "locale": language')
    assert.deepEqual(body.routes, {invalidate: ['/blog/hello'], current: ['/blog/hello'], previous: []})
    assert.deepEqual(body.tags, ['article:article-42', 'article-42', 'article'])
    // The spread carries the rendered fields; the control fields stay out of the document.
    assert.equal(body.document.title, 'Hello')
    assert.equal(body.document.slug, 'hello')
    assert.ok(!('op' in body.document) && !('previousSlug' in body.document), JSON.stringify(body.document))
  })

  test('functions test --event update with a slug change: previousSlug and old + new routes', async () => {
    // The README shows these files with --file-before/--file-after; the same documents inline here.
    const before = readFileSync(join(ROOT, 'examples/events/article-before.json'), 'utf8')
    const after = readFileSync(join(ROOT, 'examples/events/article-after.json'), 'utf8')
    const r = await sanityRun(
      ['functions', 'test', 'fly-sync', '--event', 'update', '--data-before', before, '--data-after', after],
      {env: standInEnv(standIn.url)},
    )
    assert.equal(r.code, 0, r.output)

    const [body] = await assertOnePushPerStartedMachine(standIn)
    assert.equal(body.op, 'upsert')
    assert.equal(body.operation, 'update', 'delta::operation()')
    assert.equal(body.rev, 'rev-2')
    assert.equal(body.slug, 'new-title')
    assert.equal(body.previousSlug, 'old-title', 'before().slug.current')
    assert.deepEqual(body.routes, {
      invalidate: ['/blog/new-title', '/blog/old-title'],
      current: ['/blog/new-title'],
      previous: ['/blog/old-title'],
    })
    assert.equal(body.document.title, 'New title')
  })

  test('functions test of a person: the three published articles that show it are pushed with it', async () => {
    // Offline, `functions test` puts the project of --project-id and the dataset of --dataset in
    // context.clientOptions, and no token (only --with-user-token adds one, from a login).
    const person = {_id: 'person-ada', _type: 'person', _rev: 'rev-p2', _updatedAt: '2026-11-27T10:00:00Z', name: 'Ada Lovelace'}
    const article = (n, extra = {}) => ({_id: `article-${n}`, _type: 'article', title: `Article ${n}`, slug: {_type: 'slug', current: `a${n}`}, author: ref('person-ada'), ...extra})
    const lake = await lakeWith([
      {...person, name: 'Ada'},
      article(1),
      article(2, {cacheTags: ['article:2']}),
      article(3, {author: undefined, authors: [ref('person-ada', {_key: 'k'})]}),
      article(4, {_id: 'drafts.article-4'}), // a draft: not a dependent
      article(5, {author: ref('person-grace')}), // shows someone else
      {_id: 'person-grace', _type: 'person', name: 'Grace'},
    ])
    try {
      const r = await sanityRun(
        ['functions', 'test', 'fly-sync', '--project-id', 'local', '--dataset', 'production', '--data', JSON.stringify(person)],
        {env: standInEnv(standIn.url, {SANITY_API_HOST: lake.url})},
      )
      assert.equal(r.code, 0, r.output)
      assert.match(r.output, succeeded)

      const [body] = await assertOnePushPerStartedMachine(standIn)
      assert.equal(body.id, 'person-ada')
      assert.equal(body.document.name, 'Ada Lovelace')
      assert.deepEqual([...body.routes.invalidate].sort(), ['/blog/a1', '/blog/a2', '/blog/a3'], 'a person has no route: only its dependents\'')
      assert.deepEqual(body.routes.current, [])
      const byId = Object.fromEntries(body.dependents.documents.map((d) => [d.id, d]))
      assert.deepEqual(Object.keys(byId).sort(), ['article-1', 'article-2', 'article-3'])
      assert.deepEqual(byId['article-2'], {id: 'article-2', type: 'article', routes: ['/blog/a2'], tags: ['article:2', 'article-2', 'article']})
      assert.equal(body.dependents.more, undefined, 'under the cap')
      for (const tag of ['person-ada', 'person', 'article-1', 'article:2', 'article-3']) assert.ok(body.tags.includes(tag), `${tag} in ${body.tags}`)

      assert.deepEqual(lake.log.map((e) => [e.method, e.path, e.status]), [['POST', '/v2025-02-19/data/query/production', 200]], 'one query for one level')
      const report = reportIn(r.output)
      assert.equal(report.ok, true)
      assert.deepEqual([...report.targets[0].dependents.pushed].sort(), ['article-1', 'article-2', 'article-3'])
      assert.match(report.targets[0].dependents.withoutToken, /without a token/, 'offline the CLI passes no token, and the report says so')
    } finally {
      await lake.close()
    }
  })

  test('functions test of the sync-tag Function: the tags pushed to every started Machine, done called after', async () => {
    // A sync-tag-invalidate Function takes its event as given (`--data` or `--file`, no --event): event.data is
    // {syncTags}. The CLI hands every handler a `done` that answers 204.
    const r = await sanityRun(['functions', 'test', 'fly-sync-tags', '--file', 'examples/events/sync-tags.json'], {env: standInEnv(standIn.url)})
    assert.equal(r.code, 0, r.output)
    assert.match(r.output, succeeded)

    const [body] = await assertOnePushPerStartedMachine(standIn)
    assert.equal(body.op, 'tags')
    assert.deepEqual(body.syncTags, JSON.parse(readFileSync(join(ROOT, 'examples/events/sync-tags.json'), 'utf8')).syncTags)
    assert.match(body.idempotencyKey, /^tags:/)
    assert.ok(!('document' in body) && !('routes' in body), JSON.stringify(body))
    const report = reportIn(r.output)
    assert.equal(report.ok, true)
    assert.equal(report.syncTags.count, 2)
    assert.equal(report.targets[0].machines.filter((m) => m.sync === 'synced').length, 2)
    // done comes last: after every push was answered and the report logged.
    const at = (pattern) => r.output.search(pattern)
    const done = at(/"action":"sync-tags-done","called":true,"tags":2,"status":204/)
    assert.ok(done > at(/"action":"done","report"/) && at(/"action":"done","report"/) > 0, r.output)
    assert.ok([...r.output.matchAll(/"kind":"sync"/g)].every((m) => m.index < done))
  })

  test('the blueprint filter keeps drafts, versions and other types away: nothing is sent', async () => {
    for (const doc of [
      article({_id: 'drafts.article-42'}),
      article({_id: 'versions.rSpring.article-42'}),
      article({_id: 'author-1', _type: 'author'}),
    ]) {
      const r = await sanityRun(['functions', 'test', 'fly-sync', '--data', JSON.stringify(doc)], {
        env: standInEnv(standIn.url),
      })
      assert.equal(r.code, 0, r.output)
      assert.match(r.output, /returned an empty result\. Skipping invoke/, doc._id)
    }
    assert.deepEqual(standIn.requests, [])
  })

  test('a configuration error fails the invocation (exit 2), names the variable and sends nothing', async () => {
    const env = standInEnv(standIn.url)
    delete env.FLY_SYNC_SECRET
    const r = await sanityRun(['functions', 'test', 'fly-sync', '--data', JSON.stringify(article())], {env})
    assert.equal(r.code, 2, r.output)
    assert.match(r.output, /Function execution failed/)
    assert.match(r.output, /FLY_SYNC_SECRET/)
    assert.deepEqual(standIn.requests, [])
  })

  test('functions dev: POST /invoke of a delete with its before document; the page linking to it rides along', async () => {
    // The context names project abc123: its dependents query goes to a private local Content Lake serving it. The
    // dev server replaces a token in the invoke's clientOptions by the CLI login's (none offline), so the token comes
    // from SANITY_API_READ_TOKEN in the Function's environment, the fallback when the context has none.
    const token = 'sk-local-dev-read-token'
    const lake = await lakeWith(
      [
        {_id: 'page-links', _type: 'page', title: 'Links', slug: {_type: 'slug', current: 'links'}, related: [ref('article-42', {_key: 'a'})]},
        {_id: 'page-other', _type: 'page', title: 'Other', slug: {_type: 'slug', current: 'other'}},
      ],
      {projectId: 'abc123', token},
    )
    const port = await freePort()
    const dev = start(process.execPath, [SANITY_RUN, 'functions', 'dev', '--host', '127.0.0.1', '--port', String(port)], {
      env: standInEnv(standIn.url, {SANITY_API_HOST: lake.url, SANITY_API_READ_TOKEN: token}),
    })
    try {
      await dev.waitFor(/Server is running on http:\/\/127\.0\.0\.1:\d+/)
      const base = `http://127.0.0.1:${port}`
      // Ready = it serves the parsed blueprint (bounded: the log line above says it is listening already).
      let blueprint
      for (let attempt = 0; attempt < 50 && !blueprint; attempt++) {
        const response = await fetch(`${base}/blueprint`).catch(() => undefined)
        if (response?.ok) blueprint = await response.json()
      }
      assert.ok(blueprint, `GET /blueprint never answered:\n${dev.output()}`)
      assert.equal(blueprint.parsedBlueprint.resources[0].name, 'fly-sync')

      const gone = article({_rev: 'rev-9', title: 'Gone', slug: {_type: 'slug', current: 'gone'}})
      const response = await fetch(`${base}/invoke`, {
        method: 'POST',
        headers: {'content-type': 'application/json'},
        body: JSON.stringify({
          func: 'fly-sync',
          data: {context: {clientOptions: {projectId: 'abc123', dataset: 'production'}}, event: gone},
          metadata: {event: 'delete', before: gone, after: null},
        }),
      })
      const answer = await response.json()
      assert.equal(response.status, 200, JSON.stringify(answer))
      assert.equal(answer.error, undefined, answer.logs)
      assert.match(answer.logs, /"action":"done".*"ok":true/)

      const [body] = await assertOnePushPerStartedMachine(standIn)
      assert.equal(body.op, 'delete')
      assert.equal(body.operation, 'delete')
      assert.equal(body.idempotencyKey, 'delete:article-42:rev-9')
      assert.ok(!('document' in body), 'a delete carries no document')
      // The deleted article's old route, then the route of the page that links to it (its dependent).
      assert.deepEqual(body.routes, {invalidate: ['/blog/gone', '/links'], current: [], previous: ['/blog/gone']})
      assert.deepEqual(body.dependents, {documents: [{id: 'page-links', type: 'page', routes: ['/links'], tags: ['page-links', 'page']}]})
      assert.ok(body.tags.includes('page-links'), JSON.stringify(body.tags))
      // One query, to the dataset of the context, answered (without the token, or with another, it is a 401 here).
      assert.deepEqual(lake.log.map((e) => [e.method, e.path, e.search, e.status]), [
        ['POST', '/v2025-02-19/data/query/production', '?perspective=published&returnQuery=false', 200],
      ])
      const report = reportIn(answer.logs)
      assert.deepEqual(report.targets[0].dependents, {pushed: ['page-links'], levels: 1})
      assert.doesNotMatch(answer.logs, new RegExp(token), 'the token is never logged')
    } finally {
      await dev.stop()
      await lake.close()
    }
  })

  test('functions build: the deploy zip is self-contained and its index.js syncs in a fresh Node', async () => {
    const outDir = join(tmp, 'build')
    const r = await sanityRun(['functions', 'build', 'fly-sync', '--out-dir', outDir])
    assert.equal(r.code, 0, r.output)

    const zip = new AdmZip(join(outDir, 'fly-sync.zip'))
    // Only the bundle (index.js, its wasm module, and the chunks it loads when a run needs them): no package.json (so no install at
    // deploy), no node_modules.
    const built = readdirSync(join(ROOT, 'dist/functions/fly-sync')).sort()
    assert.ok(built.includes('index.js') && built.includes('sanity_fly_sync_bg.wasm') && built.every((f) => f.endsWith('.js') || f === 'sanity_fly_sync_bg.wasm'), built.join(' '))
    assert.deepEqual(zip.getEntries().map((e) => e.entryName).sort(), built)
    const unpacked = join(tmp, 'unpacked')
    zip.extractAllTo(unpacked, true)

    // A typeless index.js with ESM syntax, loaded as the runtime would: by Node 24, with no package.json around.
    const driver = `
      import {pathToFileURL} from 'node:url'
      const {handler} = await import(pathToFileURL(process.argv[1]).href)
      if (typeof handler !== 'function') throw new Error('no handler export')
      await handler({context: {local: true}, event: {data: JSON.parse(process.argv[2])}})
      console.log('handler resolved')`
    const data = {...article({_rev: 'rev-3'}), slug: 'hello', op: 'create', previousSlug: null}
    const result = await run(
      process.execPath,
      ['--input-type=module', '-e', driver, join(unpacked, 'index.js'), JSON.stringify(data)],
      {cwd: unpacked, env: standInEnv(standIn.url, {FLY_APP_NAME: 'my-fly-app', FLY_SYNC_ROUTES: 'article=/blog/{slug}'})},
    )
    assert.equal(result.code, 0, result.output)
    assert.match(result.output, /handler resolved/)

    const [body] = await assertOnePushPerStartedMachine(standIn)
    assert.equal(body.operation, 'create')
    assert.equal(body.idempotencyKey, 'upsert:article-42:rev-3')
    assert.deepEqual(body.routes.current, ['/blog/hello'])
  })
})
