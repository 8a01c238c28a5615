// The npm package (pkg/, `npm pack`) installed the way a team installs it: into a fresh folder outside the
// repository, with npm, on Node 20 (the system Node) and Node 24 (the Functions runtime), without a Rust toolchain
// and offline. There it loads, verifies and applies a signed push, serves it over node:http, refuses a payload of a
// newer protocol, and runs the Function against a loopback Fly. The framework examples (examples/kits) then run
// against the same install. Needs `npm run build`.
import {after, before, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {copyFileSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET, ROOT, run} from './support/run.mjs'
import {NODE_24, NPM_CLI, bareEnv, checks, npmInstall, packTarball, readJson, scratch, systemNode} from './support/package.mjs'

const cargoVersion = readFileSync(join(ROOT, 'Cargo.toml'), 'utf8').match(/^version\s*=\s*"([^"]+)"/m)[1]
const PROTOCOL = 'sanity-fly-sync/1'

describe('the packed package in a scratch project', () => {
  let tarball
  let standIn
  const folders = []
  before(async () => {
    // The README's `npm run pack` (after `npm run build`, which npm test ran): out/sanity-fly-sync-<version>.tgz.
    const pack = await run(process.execPath, [NPM_CLI, 'run', 'pack'], {timeoutMs: 60_000})
    assert.equal(pack.code, 0, pack.output)
    const dir = scratch('pack')
    folders.push(dir)
    tarball = await packTarball(dir)
    assert.ok(readFileSync(join(ROOT, 'out', `sanity-fly-sync-${cargoVersion}.tgz`)).equals(readFileSync(tarball.path)), 'npm run pack makes the same tarball')
    standIn = await startFlyStandIn()
  })
  after(async () => {
    await standIn?.close()
    for (const dir of folders) rmSync(dir, {recursive: true, force: true})
  })

  test('the tarball: the package layout, one version everywhere, the protocol stated', (t) => {
    const manifest = readJson(join(ROOT, 'pkg/package.json'))
    assert.equal(manifest.name, 'sanity-fly-sync')
    assert.equal(manifest.version, cargoVersion, 'package version = crate version')
    assert.equal(readJson(join(ROOT, 'package.json')).version, cargoVersion)
    assert.equal(manifest.sanityFlySync.protocol, PROTOCOL)
    assert.match(readFileSync(join(ROOT, 'docs/protocol.md'), 'utf8'), new RegExp(`sanity-fly-sync@${cargoVersion.replace(/\./g, '\\.')}\\b.*${PROTOCOL}`))
    for (const path of ['.', './blueprint', './receiver', './next', './node', './core', './core/receiver']) assert.ok(manifest.exports[path], `export ${path}`)
    // wasm-pack's layout at the top, the entries and their types in dist/, the deployable Function folder.
    for (const file of ['package.json', 'sanity_fly_sync.js', 'sanity_fly_sync.d.ts', 'sanity_fly_sync_bg.wasm', 'sanity_fly_sync_receiver.js',
      'sanity_fly_sync_receiver.d.ts', 'sanity_fly_sync_receiver_bg.wasm', 'function/index.js', 'function/sanity_fly_sync_bg.wasm', 'dist/function.js', 'dist/function.d.ts', 'dist/receiver/kits/next.d.ts']) {
      assert.ok(tarball.files.includes(file), `${file} in the tarball`)
    }
    assert.ok(!tarball.files.some((f) => f.endsWith('.rs') || f.startsWith('src/') || f === 'function/package.json'), tarball.files.join(' '))
    t.diagnostic(`tarball ${tarball.size} bytes, ${tarball.files.length} files`)
  })

  for (const [label, node, major] of [['Node 20 (system)', systemNode(), 'v20.'], ['Node 24', NODE_24, 'v24.']]) {
    test(`${label}: npm install of the tarball, then every entry works without Rust or the repository`, async (t) => {
      const dir = scratch('install')
      folders.push(dir)
      writeFileSync(join(dir, 'package.json'), JSON.stringify({name: 'scratch-app', private: true, type: 'module'}))
      const install = await npmInstall(dir, [tarball.path], node)
      assert.equal(install.code, 0, install.output)
      const version = (await run(node, ['--version'], {cwd: dir, env: bareEnv(node)})).output.trim()
      t.diagnostic(`${version}: npm install ${install.ms} ms`)
      assert.ok(version.startsWith(major), `${label} is the Node it says: ${version}`)
      const rust = await run('/bin/sh', ['-c', 'command -v cargo rustc rustup || true'], {cwd: dir, env: bareEnv(node)})
      assert.equal(rust.output.trim(), '', 'no Rust toolchain on PATH')

      copyFileSync(join(ROOT, 'tests/node/fixtures/package-smoke.mjs'), join(dir, 'smoke.mjs'))
      const env = bareEnv(node, {
        FLY_API_URL: standIn.url, FLY_APP_URL: standIn.url, FLY_API_TOKEN, FLY_SYNC_SECRET, STAND_IN_URL: standIn.url,
        FLY_APP_NAME: 'my-fly-app', FLY_SYNC_ROUTES: 'post=/posts/{slug}',
      })
      standIn.reset()
      const r = await run(node, ['smoke.mjs'], {cwd: dir, env})
      assert.equal(r.code, 0, r.output)
      const c = checks(r.output)

      assert.deepEqual({version: c.manifest.version, protocol: c.manifest.protocol}, {version: cargoVersion, protocol: PROTOCOL})
      assert.ok(c.imports.loaded['.'].includes('handler') && c.imports.loaded['.'].includes('createWebhookHandler'), JSON.stringify(c.imports))
      assert.ok(c.imports.loaded['./receiver'].includes('createReceiver'))
      assert.ok(c.imports.loaded['./node'].includes('createNodeReceiver'))
      assert.ok(c.imports.loaded['./core'].includes('SyncEngine') && !c.imports.loaded['./core'].includes('ReceiverDriver'), 'the Function\'s module: the engine only')
      assert.ok(c.imports.loaded['./core/receiver'].includes('ReceiverDriver') && !c.imports.loaded['./core/receiver'].includes('SyncEngine'), 'the receiver\'s module: no engine')
      // Optional peers the scratch project does not have: only those imports fail, and for that reason.
      assert.deepEqual(c.imports.loaded['./blueprint'], {error: 'ERR_MODULE_NOT_FOUND'})
      assert.deepEqual(c.imports.loaded['./next'], {error: 'ERR_MODULE_NOT_FOUND'})
      assert.equal(c.core.version, cargoVersion)
      assert.equal(c.core.receiverVersion, cargoVersion)

      assert.equal(c.receiver.status, 200)
      assert.deepEqual(c.receiver.body, {protocol: PROTOCOL, machine: 'scratch-machine', status: 'applied', restart: null})
      assert.deepEqual(c.receiver.stored, ['post-1'])
      assert.deepEqual(c.receiver.purged, ['/posts/hello', 'post-1', 'post'])
      if (Number(version.slice(1).split('.')[0]) >= 22) assert.deepEqual(c.sqlite, {check: 'sqlite', status: 'applied', marks: 1})
      else assert.deepEqual([c.sqlite.field, /node:sqlite \(22\.5 or later.*leave `store` out/.test(c.sqlite.message)], ['store', true], JSON.stringify(c.sqlite))
      assert.equal(c['newer-protocol'].status, 400)
      assert.match(c['newer-protocol'].body.error, /protocol.*sanity-fly-sync\/1/)

      assert.equal(c.node.status, 200)
      assert.equal(c.node.body.machine, 'node-machine')
      assert.equal(c.node.tooLarge, 413)

      assert.deepEqual({ok: c.function.ok, synced: c.function.synced}, {ok: true, synced: 2})
      const [push] = await assertOnePushPerStartedMachine(standIn)
      assert.deepEqual(push.routes.current, ['/posts/hi'])
    })
  }

  test('Node 24: the framework examples (Hono, Express, React Router, Astro) apply a push through the installed package', async () => {
    const dir = scratch('kits')
    folders.push(dir)
    writeFileSync(join(dir, 'package.json'), JSON.stringify({name: 'scratch-kits', private: true, type: 'module'}))
    const install = await npmInstall(dir, [tarball.path], NODE_24)
    assert.equal(install.code, 0, install.output)
    // The frameworks come from the repository's install (linked, as a workspace would); the examples are copied.
    for (const name of ['hono', 'express']) symlinkSync(join(ROOT, 'node_modules', name), join(dir, 'node_modules', name), 'dir')
    mkdirSync(join(dir, 'kits'))
    for (const file of ['content.ts', 'hono.ts', 'express.ts', 'react-router.ts', 'astro.ts']) copyFileSync(join(ROOT, 'examples/kits', file), join(dir, 'kits', file))
    copyFileSync(join(ROOT, 'tests/node/fixtures/kits-smoke.mjs'), join(dir, 'kits-smoke.mjs'))
    const r = await run(NODE_24, ['kits-smoke.mjs'], {cwd: dir, env: bareEnv(NODE_24, {FLY_SYNC_SECRET: 'kits-secret-0123456789abcdef', FLY_MACHINE_ID: 'kit-machine'})})
    assert.equal(r.code, 0, r.output)
    const c = checks(r.output)
    for (const kit of ['hono', 'express', 'react-router', 'astro']) {
      assert.equal(c[kit].status, 200, `${kit}: ${JSON.stringify(c[kit])}`)
      assert.deepEqual(c[kit].ack, {protocol: PROTOCOL, machine: 'kit-machine', status: 'applied', restart: null}, kit)
      assert.equal(c[kit].title, `Hello from ${kit}`, `${kit}: stored`)
      assert.ok(c[kit].purged.includes(`/posts/${kit}`), `${kit}: purged its route`)
      assert.equal(c[kit].replay, 'duplicate', `${kit}: the same push again is a duplicate`)
      assert.equal(c[kit].forged, 401, `${kit}: a bad signature is refused`)
    }
  })
})
