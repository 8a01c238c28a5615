// "Add it to your Sanity project", as the README tells it: a scratch blueprint project outside the repository with
// a Function of its own installs the packed tarball (npm, offline), adds one line — flySyncFunction(…) — to its
// sanity.blueprint.ts, and Sanity's CLI (@sanity/runtime-cli, the repo's copy, as the team's npx would run it) tests
// both Functions and builds the deploy zip. The zip's index.js then syncs on its own in a fresh Node. The Fly side is
// the local Fly (local/fly): the Machines API emulator holds the app `my-fly-app` (three started Machines over two
// regions and one stopped one, the token scoped to that app) and a fleet runs, on every Machine behind the
// `fly-force-instance-id` proxy, the installed package's receiver with the same FLY_SYNC_SECRET. What a run did is
// read from the local Fly's own records: the emulator's request log, the proxy's log, what reached each Machine and
// what its receiver applied. Needs `npm run build`.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {existsSync, mkdirSync, readdirSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import AdmZip from 'adm-zip'
import {pathToFileURL} from 'node:url'
import {startFleet} from '../../local/fly/fleet.mjs'
import {assertOnePushPerStartedMachineOnLocalFly} from './support/assert-sync.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET, ROOT, run, sanityRun, standInEnv} from './support/run.mjs'
import {NODE_24, listFiles, npmInstall, packTarball, scratch} from './support/package.mjs'

// The README's blueprint, with the team's own Function beside ours.
const BLUEPRINT = `import {defineBlueprint, defineDocumentFunction} from '@sanity/blueprints'
import {flySyncFunction} from 'sanity-fly-sync/blueprint'

export default defineBlueprint({
  resources: [
    defineDocumentFunction({name: 'audit-log', event: {on: ['create'], filter: '_type == "post"'}}),
    flySyncFunction({app: 'my-fly-app', types: ['post', 'page'], routes: {post: '/posts/{slug}', page: '/{slug}'}}),
  ],
})
`
const AUDIT_LOG = `export async function handler({event}) {
  console.log('audit', event.data._id)
  return {audited: event.data._id}
}
`
// The team's Fly app: the receiver as the README has the app import it, from the installed package.
const FLY_APP = `export {createReceiver} from 'sanity-fly-sync/receiver'
`
const APP = 'my-fly-app'
const post = {_id: 'post-7', _type: 'post', _rev: 'r7', _updatedAt: '2026-11-27T10:00:00Z', title: 'Seven', slug: {_type: 'slug', current: 'seven'}}

describe('a team blueprint project with the package installed', () => {
  let project
  let fly
  let since
  let env
  let out
  before(async () => {
    out = scratch('blueprint-out')
    project = scratch('blueprint-project')
    writeFileSync(join(project, 'package.json'), JSON.stringify({name: 'team-studio-functions', private: true, type: 'module'}))
    const install = await npmInstall(project, [(await packTarball(out)).path], NODE_24)
    assert.equal(install.code, 0, install.output)
    // The team's own @sanity/blueprints (a dependency every blueprint project has), linked from the repository.
    mkdirSync(join(project, 'node_modules/@sanity'), {recursive: true})
    symlinkSync(join(ROOT, 'node_modules/@sanity/blueprints'), join(project, 'node_modules/@sanity/blueprints'), 'dir')
    writeFileSync(join(project, 'sanity.blueprint.ts'), BLUEPRINT)
    mkdirSync(join(project, 'functions/audit-log'), {recursive: true})
    writeFileSync(join(project, 'functions/audit-log/index.js'), AUDIT_LOG)
    writeFileSync(join(project, 'post.json'), JSON.stringify(post))
    writeFileSync(join(project, 'fly-app.mjs'), FLY_APP)
    fly = await startLocalFly((await import(pathToFileURL(join(project, 'fly-app.mjs')).href)).createReceiver)
    env = (extra) => standInEnv(fly.api.url, {FLY_APP_URL: fly.fleet.url, ...extra})
  })
  after(async () => {
    await fly?.fleet.close()
    for (const dir of [project, out]) if (dir) rmSync(dir, {recursive: true, force: true})
  })
  beforeEach(() => (since = fly.mark()))

  test('functions test fly-sync: the event from the helper\'s filter and projection, one signed push per started Machine', async () => {
    const r = await sanityRun(['functions', 'test', 'fly-sync', '--file', 'post.json'], {cwd: project, env: env()})
    assert.equal(r.code, 0, r.output)
    assert.match(r.output, /Function execution succeeded/)
    const [body] = await assertOnePushPerStartedMachineOnLocalFly(fly, since)
    assert.equal(body.id, 'post-7')
    assert.equal(body.slug, 'seven', 'projection: "slug": slug.current')
    assert.deepEqual(body.routes.current, ['/posts/seven'])
    assert.equal(body.document.title, 'Seven')
    // The CLI's temporary package.json is gone again: the installed package is as npm left it.
    assert.ok(!existsSync(join(project, 'node_modules/sanity-fly-sync/function/package.json')))
  })

  test('the helper\'s filter keeps other types and drafts away; the team\'s own Function still runs', async () => {
    for (const doc of [{...post, _type: 'author'}, {...post, _id: 'drafts.post-7'}]) {
      const r = await sanityRun(['functions', 'test', 'fly-sync', '--data', JSON.stringify(doc)], {cwd: project, env: env()})
      assert.equal(r.code, 0, r.output)
      assert.match(r.output, /returned an empty result\. Skipping invoke/)
    }
    assert.deepEqual(fly.since(since), {api: [], fleet: [], arrivals: [], applied: []}, 'nothing reached the local Fly')
    const audit = await sanityRun(['functions', 'test', 'audit-log', '--file', 'post.json'], {cwd: project, env: env()})
    assert.equal(audit.code, 0, audit.output)
    assert.match(audit.output, /audit post-7/)
    assert.deepEqual(fly.since(since), {api: [], fleet: [], arrivals: [], applied: []}, 'the audit Function does not sync')
  })

  test('functions build: the deploy zip holds only the prebuilt Function (index.js, its wasm module and its chunks), which syncs in a fresh Node 24', async () => {
    const zips = join(out, 'zips')
    const r = await sanityRun(['functions', 'build', 'fly-sync', '--out-dir', zips], {cwd: project})
    assert.equal(r.code, 0, r.output)
    const zip = new AdmZip(join(zips, 'fly-sync.zip'))
    // The installed package's prebuilt folder as it is: index.js, its wasm module, and the chunks it loads when a run needs them.
    const prebuilt = readdirSync(join(ROOT, 'pkg/function')).sort()
    assert.ok(prebuilt.includes('index.js') && prebuilt.includes('sanity_fly_sync_bg.wasm') && prebuilt.every((f) => f.endsWith('.js') || f === 'sanity_fly_sync_bg.wasm'), prebuilt.join(' '))
    assert.deepEqual(zip.getEntries().map((e) => e.entryName).sort(), prebuilt)
    const unpacked = join(out, 'unpacked')
    zip.extractAllTo(unpacked, true)
    assert.deepEqual(listFiles(unpacked).sort(), prebuilt)

    const driver = `
      import {pathToFileURL} from 'node:url'
      const {handler} = await import(pathToFileURL(process.argv[1]).href)
      const report = await handler({context: {local: true}, event: {data: JSON.parse(process.argv[2])}})
      console.log('synced', report.targets[0].machines.filter((m) => m.sync === 'synced').length)`
    const data = {...post, _rev: 'r8', slug: 'seven', op: 'update', previousSlug: 'six'}
    const zipEnv = env({FLY_APP_NAME: APP, FLY_SYNC_ROUTES: 'post=/posts/{slug}'})
    const result = await run(NODE_24, ['--input-type=module', '-e', driver, join(unpacked, 'index.js'), JSON.stringify(data)], {cwd: unpacked, env: zipEnv})
    assert.equal(result.code, 0, result.output)
    assert.match(result.output, new RegExp(`synced ${fly.started().length}\\b`))
    const [body] = await assertOnePushPerStartedMachineOnLocalFly(fly, since)
    assert.deepEqual(body.routes, {invalidate: ['/posts/seven', '/posts/six'], current: ['/posts/seven'], previous: ['/posts/six']})

    // The team's own Function builds beside it.
    const own = await sanityRun(['functions', 'build', 'audit-log', '--out-dir', zips], {cwd: project})
    assert.equal(own.code, 0, own.output)
    assert.ok(existsSync(join(zips, 'audit-log.zip')))
  })
})

/**
 * The local Fly for the team's app: the emulator (only FLY_API_TOKEN, scoped to the app) and a fleet of three
 * started Machines over ord and fra plus a stopped one in fra, each running `createReceiver` with FLY_SYNC_SECRET.
 * Every Machine records what reached it (`arrivals`: its id, the headers, the raw and parsed body, its
 * receiver's answer) and what its receiver applied (`applied`). `mark()` and `since(mark)` cut the records per test.
 */
async function startLocalFly(createReceiver) {
  const arrivals = []
  const applied = []
  const fleet = await startFleet({
    app: APP,
    machines: [{region: 'ord'}, {region: 'fra'}, {region: 'ord'}, {region: 'fra', state: 'stopped'}],
    regions: ['ord', 'fra'],
    latencyMs: {ord: 1, fra: 2},
    apiOptions: {tokens: {[FLY_API_TOKEN]: [APP]}},
    handlerFor: (machine) => {
      const receiver = createReceiver({
        secret: FLY_SYNC_SECRET,
        machineId: machine.env.FLY_MACHINE_ID,
        apply: (change) => void applied.push({machine: machine.id, id: change.id, rev: change.rev}),
      })
      return async (request) => {
        const raw = await request.clone().text()
        const response = await receiver(request)
        const ack = await response.clone().json()
        arrivals.push({machine: machine.id, headers: Object.fromEntries(request.headers), raw, body: JSON.parse(raw), ack})
        return response
      }
    },
  })
  const {api} = fleet
  return {
    api,
    fleet,
    app: APP,
    started: () => api.machines(APP).filter((m) => m.state === 'started').map((m) => m.id),
    mark: () => ({api: api.log.length, fleet: fleet.log.length, arrivals: arrivals.length, applied: applied.length}),
    since: (m) => ({api: api.log.slice(m.api), fleet: fleet.log.slice(m.fleet), arrivals: arrivals.slice(m.arrivals), applied: applied.slice(m.applied)}),
  }
}
