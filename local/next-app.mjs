// A real Next.js app (examples/next-app, App Router, the package's Next.js kit) on the local Fly: every Machine is
// its own `next start` process with FLY_MACHINE_ID, FLY_REGION… and its own copy of the build (a Fly Machine has its
// own disk, so no Machine can read a page another one rendered). Editors publish, rename and delete through the
// real @sanity/client against the local Content Lake; the repo blueprint's filter and projection turn each commit
// into the Function's event; the packaged Function handler pushes it; then every Machine's rendered HTML is read.
//
// `prepareNextApp()` packs pkg/ (`npm pack`), unpacks it into examples/next-app/node_modules and runs `next build`
// only when the example's sources or the package changed since the last build (a stamp in .next/), one build at a
// time (a lock folder). Used by `npm run simulate -- --app next` and tests/node/next-app.test.mjs.
import {createHash, createHmac} from 'node:crypto'
import {execFileSync, spawn} from 'node:child_process'
import {cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {createServer} from 'node:net'
import {dirname, join} from 'node:path'
import {fileURLToPath, pathToFileURL} from 'node:url'
import {createClient} from '@sanity/client'
import {DEFAULT_TOKEN, startFleet, startProcessMachine} from './fly/index.mjs'
import {DocumentStore} from './content-lake/store.mjs'
import {startContentLake} from './content-lake/server.mjs'
import {eventsFor} from './sanity-events.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
export const APP_DIR = join(root, 'examples/next-app')
const WORK = join(APP_DIR, '.fly') // per-Machine copies, the tarball, the build lock (git-ignored)
const NEXT_BIN = join(root, 'node_modules/next/dist/bin/next')
const STAMP = join(APP_DIR, '.next/sanity-fly-sync-stamp')
const SECRET = 'next-app-sync-secret-0123456789'
const SANITY_TOKEN = 'next-app-sanity-token'
/** Where the kit is mounted (the route file examples/next-app/app/internal/content-sync/route.js). */
export const SYNC_PATH = '/internal/content-sync'

const nextEnv = (extra = {}) => ({...process.env, NEXT_TELEMETRY_DISABLED: '1', ...extra})

function sourcesHash(dir, hash = createHash('sha256'), base = dir) {
  for (const entry of readdirSync(dir, {withFileTypes: true}).sort((a, b) => a.name.localeCompare(b.name))) {
    if (['.next', '.fly', 'node_modules'].includes(entry.name)) continue
    const path = join(dir, entry.name)
    if (entry.isDirectory()) sourcesHash(path, hash, base)
    else hash.update(path.slice(base.length)).update(readFileSync(path))
  }
  return hash
}

/** Hold the build lock while `work` runs; wait (bounded) for another holder that is alive. */
async function withBuildLock(work, {timeoutMs = 10 * 60_000} = {}) {
  const lock = join(WORK, 'build.lock')
  mkdirSync(WORK, {recursive: true})
  const deadline = Date.now() + timeoutMs
  for (;;) {
    try {
      mkdirSync(lock)
      writeFileSync(join(lock, 'pid'), String(process.pid))
      break
    } catch (error) {
      if (error.code !== 'EEXIST') throw error
      let holder = Number.NaN
      try {
        holder = Number(readFileSync(join(lock, 'pid'), 'utf8'))
      } catch {}
      let alive = false
      try {
        alive = Number.isInteger(holder) && process.kill(holder, 0)
      } catch {}
      if (!alive && Number.isInteger(holder)) rmSync(lock, {recursive: true, force: true})
      else if (Date.now() > deadline) throw new Error(`next build: another build holds ${lock} for too long`)
      else await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  try {
    return await work()
  } finally {
    rmSync(lock, {recursive: true, force: true})
  }
}

/**
 * Pack the package, put it in the example's node_modules and build the example if anything changed.
 * @returns {Promise<{tarball: string, tarballBytes: number, built: boolean, buildMs: number}>}
 */
export async function prepareNextApp({log = () => {}} = {}) {
  if (!existsSync(join(root, 'pkg/package.json'))) throw new Error('pkg/package.json missing: run `npm run build` first')
  return withBuildLock(async () => {
    const packDir = join(WORK, 'pack')
    rmSync(packDir, {recursive: true, force: true})
    mkdirSync(packDir, {recursive: true})
    const npm = process.env.npm_execpath?.endsWith('.js') ? [process.execPath, process.env.npm_execpath] : ['npm']
    const packed = JSON.parse(execFileSync(npm[0], [...npm.slice(1), 'pack', join(root, 'pkg'), '--pack-destination', packDir, '--json'], {encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']}))
    const tarball = join(packDir, packed[0].filename)
    // A package without dependencies: installing it is unpacking it (npm itself installs it in the package tests).
    const installed = join(APP_DIR, 'node_modules/sanity-fly-sync')
    rmSync(installed, {recursive: true, force: true})
    mkdirSync(installed, {recursive: true})
    execFileSync('tar', ['-xzf', tarball, '-C', installed, '--strip-components=1'])

    const stamp = sourcesHash(APP_DIR).update(readFileSync(tarball)).digest('hex')
    const current = existsSync(STAMP) ? readFileSync(STAMP, 'utf8') : null
    if (current === stamp) return {tarball, tarballBytes: statSync(tarball).size, built: false, buildMs: 0}
    log('next build (examples/next-app) …')
    const started = Date.now()
    await runToEnd(process.execPath, [NEXT_BIN, 'build'], {cwd: APP_DIR, env: nextEnv()}, 10 * 60_000)
    writeFileSync(STAMP, stamp)
    return {tarball, tarballBytes: statSync(tarball).size, built: true, buildMs: Date.now() - started}
  })
}

function runToEnd(command, args, options, timeoutMs) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {...options, detached: true, stdio: ['ignore', 'pipe', 'pipe']})
    let output = ''
    child.stdout.on('data', (s) => (output += s))
    child.stderr.on('data', (s) => (output += s))
    const timer = setTimeout(() => process.kill(-child.pid, 'SIGKILL'), timeoutMs)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(output)
      else reject(new Error(`${args.join(' ')} failed (${code ?? signal}):\n${output}`))
    })
  })
}

async function freePort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

/** A Machine's disk for one boot: a fresh copy of the build (without the build cache), as an image gives it. */
function machineDisk(machine) {
  const disk = join(WORK, 'machines', `${machine.id}-${machine.boot}`)
  rmSync(disk, {recursive: true, force: true})
  mkdirSync(disk, {recursive: true})
  cpSync(join(APP_DIR, '.next'), join(disk, '.next'), {recursive: true, filter: (src) => !src.startsWith(join(APP_DIR, '.next/cache'))})
  for (const file of ['package.json', 'next.config.mjs']) cpSync(join(APP_DIR, file), join(disk, file))
  return disk
}

/** The local Fly with every Machine running the example app (`next start`). */
export async function startNextFleet({machines = 3, regions = ['ord', 'fra', 'nrt'], latencyMs, env = {}} = {}) {
  const processes = new Map()
  const fleet = await startFleet({
    app: 'web',
    machines,
    regions,
    ...(latencyMs ? {latencyMs} : {}),
    handlerFor: async (machine) => {
      const port = await freePort()
      const disk = machineDisk(machine)
      const handler = await startProcessMachine({
        command: process.execPath,
        args: [NEXT_BIN, 'start', disk, '--port', String(port), '--hostname', '127.0.0.1'],
        env: nextEnv({...env, ...machine.env, PORT: String(port), FLY_SYNC_SECRET: SECRET}),
        url: `http://127.0.0.1:${port}`,
        readyTimeoutMs: 60_000,
      })
      processes.set(machine.id, {pid: handler.pid, boot: machine.boot, disk})
      return handler
    },
  })
  const close = fleet.close
  fleet.close = async () => {
    await close()
    rmSync(join(WORK, 'machines'), {recursive: true, force: true})
  }
  return {fleet, processes}
}

/** What one Machine's HTML shows: the article list of `/` and the article (or 404) at each route. */
function parse(html) {
  const items = [...html.matchAll(/<li data-id="([^"]+)" data-rev="([^"]+)"><a href="([^"]+)">([^<]*)<\/a>/g)].map((m) => ({id: m[1], rev: m[2], href: m[3], title: m[4]}))
  const article = html.match(/<article data-id="([^"]+)" data-rev="([^"]+)"><h1>([^<]*)<\/h1>/)
  const machine = html.match(/data-machine="([^"]+)"/)?.[1] ?? null
  return {items, article: article && {id: article[1], rev: article[2], title: article[3]}, machine}
}

/** Read `paths` from every Machine directly (no proxy): {machineId: {path: {status, items, article, machine}}}. */
async function readRendered(fleet, paths) {
  const out = {}
  for (const path of paths) {
    for (const r of await fleet.readAll(path, {timeoutMs: 10_000})) {
      out[r.id] ??= {}
      out[r.id][path] = {status: r.status, error: r.error, ...parse(r.body ?? '')}
    }
  }
  return out
}

/**
 * The steps: a control push that revalidates nothing (the pages stay as cached: they are cached), then a publish,
 * a slug rename and a delete through Sanity → Function → every Machine. After each Function run, the first read of
 * every Machine must show the change: nothing waits, nothing restarts.
 */
export async function runNextScenario({machines = 3, regions, latencyMs, onStep = () => {}, log = () => {}} = {}) {
  const prepared = await prepareNextApp({log})
  let editorialNow = Date.parse('2026-11-27T09:00:00Z')
  const store = new DocumentStore({now: () => editorialNow})
  const lake = await startContentLake({store, token: SANITY_TOKEN})
  const editor = createClient({...lake.clientConfig(), token: SANITY_TOKEN})
  const committed = []
  store.onCommit((tx) => committed.push(tx))
  const started = Date.now()
  // The live pages (app/live/[slug]) read the lake as next-sanity reads Sanity.
  const sanityEnv = {SANITY_QUERY_URL: `${lake.url}/v2025-02-19/data/query/${lake.dataset}`, SANITY_READ_TOKEN: SANITY_TOKEN}
  const {fleet, processes} = await startNextFleet({machines, regions, latencyMs, env: sanityEnv})
  const bootMs = Date.now() - started
  const {handler} = await import(pathToFileURL(join(APP_DIR, 'node_modules/sanity-fly-sync/dist/function.js')).href)
  const functionEnv = {
    FLY_APP_NAME: fleet.app,
    FLY_API_URL: fleet.api.url,
    FLY_APP_URL: fleet.url,
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SECRET,
    // The route the example renders an article at; the list at `/` follows the `article` tag.
    FLY_SYNC_ROUTES: 'article=/blog/{slug}',
    FLY_SYNC_BUDGET_MS: '20000',
  }
  const ids = fleet.machines().map((m) => m.id)
  const steps = []
  const expected = new Map() // id → {rev, slug, title} as Sanity has it (published)

  async function check(label, routes, {via, reports = [], durationMs = 0, expectList = [...expected.values()]}) {
    const rendered = await readRendered(fleet, ['/', ...routes])
    const perMachine = ids.map((id) => {
      const pages = rendered[id]
      const problems = []
      const list = pages['/'].items.map((i) => `${i.id}@${i.rev}:${i.href}`).sort()
      const want = expectList.map((d) => `${d.id}@${d.rev}:/blog/${d.slug}`).sort()
      if (JSON.stringify(list) !== JSON.stringify(want)) problems.push(`/ lists ${JSON.stringify(list)}, expected ${JSON.stringify(want)}`)
      for (const route of routes) {
        const page = pages[route]
        const doc = [...expected.values()].find((d) => `/blog/${d.slug}` === route)
        if (doc) {
          if (page.status !== 200 || page.article?.rev !== doc.rev || page.article?.title !== doc.title) problems.push(`${route}: ${page.status} ${JSON.stringify(page.article)}, expected ${doc.rev} "${doc.title}"`)
          if (page.machine !== id) problems.push(`${route}: rendered by ${page.machine}, not by this Machine`)
        } else if (page.status !== 404) {
          problems.push(`${route}: ${page.status}, expected 404`)
        }
      }
      const now = fleet.machine(id)
      const same = processes.get(id)
      if (now.boots !== 1 || same.boot !== 1) problems.push(`restarted (boots ${now.boots})`)
      return {id, region: now.region, fresh: problems.length === 0, problems, pid: same.pid}
    })
    const synced = reports.flatMap((r) => r.targets.flatMap((t) => t.machines.filter((m) => m.sync === 'synced').map((m) => m.id)))
    const step = {label, via, routes, durationMs, machines: perMachine, fresh: perMachine.filter((m) => m.fresh).length, synced: [...new Set(synced)].length, restarts: fleet.api.stats.calls.restart ?? 0}
    step.ok = step.fresh === ids.length && (via !== 'function' || step.synced === ids.length) && step.restarts === 0
    steps.push(step)
    onStep(step)
    return step
  }

  /** Sanity's published articles, plus the control document every Machine holds but Sanity never had. */
  async function expectFromSanity() {
    expected.clear()
    for (const d of await editor.fetch('*[_type == "article" && !(_id in path("drafts.**"))]{_id, _rev, title, "slug": slug.current}')) {
      expected.set(d._id, {id: d._id, rev: d._rev, title: d.title, slug: d.slug})
    }
    expected.set(CONTROL.id, CONTROL)
  }

  /** Run the packaged Function handler on each event, with its environment and without its log lines. */
  async function runFunction(events) {
    const saved = {...process.env}
    Object.assign(process.env, functionEnv)
    const print = console.log
    console.log = () => {} // the Function's JSON log lines; its reports are kept
    const reports = []
    try {
      for (const invocation of events) reports.push(await handler({context: {local: true}, ...invocation}).catch((e) => e.report ?? Promise.reject(e)))
    } finally {
      console.log = print
      for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
      Object.assign(process.env, saved)
    }
    return reports
  }

  /** Commit through the editor's client, then run the Function for every event the commit made, as Sanity would. */
  async function publish(label, mutate, routes) {
    editorialNow += 30_000
    await mutate()
    await expectFromSanity()
    const deliveries = []
    for (const tx of committed.splice(0)) for (const change of tx.changes) for (const e of await eventsFor(change)) deliveries.push({event: {data: e.data}})
    const t0 = Date.now()
    const reports = await runFunction(deliveries)
    return check(label, routes, {via: 'function', reports, durationMs: Date.now() - t0})
  }

  /**
   * Read `/live/<slug>` (cached under the query's sync tags) from every Machine; with `syncTags`, first run the
   * sync-tag Function with them (what Sanity's sync-tag-invalidate event carries), its `done` timed against the
   * Machines' answers.
   */
  async function live(label, slug, want, {syncTags} = {}) {
    let reports = []
    let done = null
    if (syncTags) {
      const calls = []
      reports = await runFunction([{event: {data: {syncTags}}, done: async (tags) => (calls.push({tags, at: Date.now()}), new Response(null, {status: 204}))}])
      const lastAnswer = Math.max(...fleet.log.filter((e) => e.path === SYNC_PATH && e.ms !== null).map((e) => e.at + e.ms))
      done = {calls: calls.length, tags: calls[0]?.tags ?? null, afterLastAnswer: calls.length === 1 && calls[0].at >= lastAnswer}
    }
    const path = `/live/${slug}`
    const rendered = await readRendered(fleet, [path])
    const perMachine = ids.map((id) => {
      const page = rendered[id][path]
      const problems = []
      if (page.status !== 200 || page.article?.title !== want) problems.push(`${path}: ${page.status} ${JSON.stringify(page.article)}, expected "${want}"`)
      return {id, fresh: problems.length === 0, problems, pid: processes.get(id).pid}
    })
    const synced = reports.flatMap((r) => r.targets.flatMap((t) => t.machines.filter((m) => m.sync === 'synced').map((m) => m.id)))
    const step = {label, via: syncTags ? 'sync-tags' : 'none', routes: [path], durationMs: 0, machines: perMachine, fresh: perMachine.filter((m) => m.fresh).length, synced: synced.length, restarts: fleet.api.stats.calls.restart ?? 0, done}
    step.ok = step.fresh === ids.length && step.restarts === 0 && (!syncTags || (step.synced === ids.length && done.afterLastAnswer))
    steps.push(step)
    onStep(step)
    return step
  }

  try {
    // Every Machine renders (and caches) the pages before anything is published.
    await check('before: nothing published', ['/blog/hello'], {via: 'none'})
    // Control: a push naming no route and no tag is applied on every Machine, yet `/` keeps its cached render.
    const acks = await controlPush(fleet, ids)
    const control = await check('control: push, nothing revalidated', ['/blog/hello'], {via: 'control', expectList: []})
    control.acks = acks
    control.ok = control.ok && acks.every((a) => a.status === 'applied')
    const article = {_id: 'article-next-1', _type: 'article', title: 'Hello from Sanity', slug: {_type: 'slug', current: 'hello'}}
    await publish('publish /blog/hello', () => editor.createOrReplace(article), ['/blog/hello'])
    await publish('rename to /blog/hello-again', () => editor.createOrReplace({...article, title: 'Hello again', slug: {_type: 'slug', current: 'hello-again'}}), ['/blog/hello-again', '/blog/hello'])
    // Sync tags: every Machine caches the live page under its query's sync tags. A content push (its routes, its
    // document's tags) leaves that page as cached; the sync-tag Function's push, with the tags the commit
    // invalidated, refreshes it on every Machine.
    await live('live: cached under sync tags', 'hello-again', 'Hello again')
    const invalidated = []
    const stop = lake.onSyncTags(({tags}) => invalidated.push(...tags))
    await publish('edit the title', () => editor.patch('article-next-1').set({title: 'Hello, live'}).commit(), ['/blog/hello-again'])
    stop()
    await live('live: still cached after a content push', 'hello-again', 'Hello again')
    await live('live: the sync-tag push refreshes it', 'hello-again', 'Hello, live', {syncTags: [...new Set(invalidated)]})
    await publish('delete', () => editor.delete('article-next-1'), ['/blog/hello-again', '/blog/hello'])
  } finally {
    await fleet.close()
    await lake.close()
  }
  return {ok: steps.every((s) => s.ok), machines: ids.length, bootMs, ...prepared, steps}
}

/** In every Machine's store (pushed by `controlPush`), never in Sanity. */
const CONTROL = {id: 'control-1', rev: 'control-r1', title: 'Control', slug: 'control'}

/** Push CONTROL to every Machine directly, signed, with no route and no tag to revalidate. */
async function controlPush(fleet, ids) {
  const raw = JSON.stringify({
    protocol: 'sanity-fly-sync/1', target: 'control', op: 'upsert', operation: 'create', id: CONTROL.id, type: 'article', rev: CONTROL.rev,
    updatedAt: new Date(Date.now() - 1_000).toISOString(), slug: CONTROL.slug, previousSlug: null,
    routes: {invalidate: [], current: [], previous: []}, tags: [], locale: null, market: null,
    document: {_id: CONTROL.id, _type: 'article', _rev: CONTROL.rev, title: CONTROL.title, slug: CONTROL.slug}, idempotencyKey: `upsert:${CONTROL.id}:${CONTROL.rev}`,
  })
  return Promise.all(
    ids.map(async (id) => {
      const t = Date.now()
      const signature = `t=${t},v1=${createHmac('sha256', SECRET).update(`${t}.${raw}`).digest('base64url')}`
      const r = await fleet.fetchFrom(id, SYNC_PATH, {method: 'POST', headers: {'content-type': 'application/json', 'sanity-fly-sync-signature': signature}, body: raw})
      return {id, httpStatus: r.status, ...(await r.json())}
    }),
  )
}
