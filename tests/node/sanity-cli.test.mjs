// The repo's blueprint run by Sanity's own CLI (@sanity/runtime-cli), offline, against a loopback stand-in for
// the Fly Machines API and the app: `functions test`, `functions dev` + POST /invoke, and the deploy zip of
// `functions build`. Needs `npm run build` (dist/functions/fly-sync). The cases run one after another: the CLI
// writes a temporary package.json into the Function folder while it runs one.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {mkdtempSync, readFileSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import AdmZip from 'adm-zip'
import {startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {freePort, ROOT, run, sanityRun, SANITY_RUN, standInEnv, start} from './support/run.mjs'

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

  test('functions dev: POST /invoke of a delete with its before document', async () => {
    const port = await freePort()
    const dev = start(process.execPath, [SANITY_RUN, 'functions', 'dev', '--host', '127.0.0.1', '--port', String(port)], {
      env: standInEnv(standIn.url),
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
      assert.deepEqual(body.routes, {invalidate: ['/blog/gone'], current: [], previous: ['/blog/gone']})
    } finally {
      await dev.stop()
    }
  })

  test('functions build: the deploy zip is self-contained and its index.js syncs in a fresh Node', async () => {
    const outDir = join(tmp, 'build')
    const r = await sanityRun(['functions', 'build', 'fly-sync', '--out-dir', outDir])
    assert.equal(r.code, 0, r.output)

    const zip = new AdmZip(join(outDir, 'fly-sync.zip'))
    // Only the bundle: no package.json (so no install at deploy), no node_modules, no sibling .wasm.
    assert.deepEqual(zip.getEntries().map((e) => e.entryName), ['index.js'])
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
