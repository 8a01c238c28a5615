// State that survives a restart (issue 15): a receiver with sqliteStore keeps its marks, tombstones, idempotency
// keys and catch-up mark in SQLite, and the app keeps its content in the same database. The process is killed
// with SIGKILL at many points of an apply — in the apply hook before and after it wrote, in invalidate, after the
// ack, during a catch-up run — then restarted, and the change is delivered again as the Function's retry would.
// Afterwards, from the app's side: its content is Sanity's, and no change was committed twice (nor lost); from the
// store's side: every document's mark is the last revision, tombstones included, and every key is remembered.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {createRequire} from 'node:module'
import {createClient} from '@sanity/client'
import {encodeSignatureHeader} from '@sanity/webhook'
import {startContentLake} from '../../local/content-lake/server.mjs'
import {DocumentStore} from '../../local/content-lake/store.mjs'

const SECRET = '0123456789abcdef-crash'
const TOKEN = 'crash-test-token'
const CHILD = fileURLToPath(new URL('./support/crash-receiver.mjs', import.meta.url))

/** The child: its JSON lines as they come, and a way to wait for one. */
function start(env) {
  const child = spawn(process.execPath, [CHILD], {env: {...process.env, ...env}, stdio: ['ignore', 'pipe', 'pipe']})
  const lines = []
  const waiters = []
  let buffer = ''
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr += chunk))
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    buffer += chunk
    const parts = buffer.split('\n')
    buffer = parts.pop()
    for (const part of parts.filter(Boolean)) {
      const line = JSON.parse(part)
      lines.push(line)
      for (const w of [...waiters]) if (w.match(line)) (waiters.splice(waiters.indexOf(w), 1), w.resolve(line))
    }
  })
  const exited = new Promise((resolve) => child.on('exit', resolve))
  const wait = (match, what, ms = 20_000) => {
    const seen = lines.find(match)
    if (seen) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms; stderr: ${stderr}`)), ms)
      waiters.push({match, resolve: (line) => (clearTimeout(timer), resolve(line))})
      void exited.then(() => reject(new Error(`${what}: the process exited first; stderr: ${stderr}`)))
    })
  }
  return {child, lines, wait, exited, kill: async () => (child.kill('SIGKILL'), await exited)}
}

async function boot(env) {
  const app = start(env)
  const {listening} = await app.wait((l) => l.listening, 'listening')
  const {ready} = await app.wait((l) => l.ready, 'the boot run')
  return {...app, url: `http://127.0.0.1:${listening}/internal/content-sync`, ready}
}

function payload(doc, op) {
  const raw = JSON.stringify({
    protocol: 'sanity-fly-sync/1', target: 'web', op, operation: op === 'delete' ? 'delete' : 'update', id: doc._id, type: doc._type,
    rev: doc._rev, updatedAt: doc._updatedAt, slug: null, previousSlug: null, routes: {invalidate: [], current: [], previous: []},
    tags: [doc._id], locale: null, market: null, ...(op === 'delete' ? {} : {document: doc}), idempotencyKey: `${op}:${doc._id}:${doc._rev}`,
  })
  return {raw, key: `${op}:${doc._id}:${doc._rev}`, id: doc._id, rev: doc._rev, op}
}

async function push(url, p) {
  const response = await fetch(url, {method: 'POST', body: p.raw, headers: {'content-type': 'application/json', 'sanity-fly-sync-signature': await encodeSignatureHeader(p.raw, Date.now(), SECRET)}})
  return {status: response.status, json: await response.json()}
}

test('SIGKILL at 11 points of the apply sequence: after each restart nothing is lost and nothing is applied twice', {timeout: 180_000}, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fly-sync-crash-'))
  // The lake's clock runs an hour behind and moves a second per edit: revisions in the past, each its own second.
  let now = Date.now() - 3_600_000
  const lakeStore = new DocumentStore({now: () => now})
  const lake = await startContentLake({store: lakeStore, token: TOKEN})
  const editor = createClient({...lake.clientConfig(), token: TOKEN})
  const env = {DB: join(dir, 'state.db'), SECRET, LAKE_URL: lake.url, LAKE_TOKEN: TOKEN}
  const edit = async (mutate) => ((now += 1_000), await mutate(editor))
  const kills = []
  try {
    const seed = editor.transaction()
    for (const n of [1, 2, 3, 4]) seed.createOrReplace({_id: `page-${n}`, _type: 'page', title: `Page ${n}`})
    await seed.commit()
    const docs = async () => Object.fromEntries((await editor.fetch('*[_type == "page"]')).map((d) => [d._id, d]))

    // 1. Killed during the boot run, after page-2's content was written (uncommitted).
    let app = start({...env, KILL_AT: 'apply:written@page-2@catch-up'})
    await app.wait((l) => l.at === 'apply:written' && l.id === 'page-2', 'the boot run reaches page-2')
    await app.kill()
    kills.push('boot run: apply:written@page-2')
    app = await boot(env)
    assert.equal(app.ready.error, undefined, JSON.stringify(app.ready))
    assert.equal(app.ready.since, null, 'the killed boot run set no mark: everything is read again')
    assert.equal(app.ready.applied, 3, 'page-1 was committed before the kill; pages 2-4 apply now')
    assert.equal(app.ready.unchanged, 1)

    // 2. Pushes, each killed at one point, restarted, and delivered again as the Function's retry.
    const plan = [
      {change: (c) => c.patch('page-1').set({title: 'Page 1, v2'}).commit(), id: 'page-1', op: 'upsert', kill: 'apply:start'},
      {change: (c) => c.patch('page-2').set({title: 'Page 2, v2'}).commit(), id: 'page-2', op: 'upsert', kill: 'apply:written'},
      {change: (c) => c.patch('page-3').set({title: 'Page 3, v2'}).commit(), id: 'page-3', op: 'upsert', kill: 'invalidate'},
      {change: (c) => c.patch('page-4').set({title: 'Page 4, v2'}).commit(), id: 'page-4', op: 'upsert', kill: 'after the ack'},
      {change: (c) => c.create({_id: 'page-5', _type: 'page', title: 'Page 5'}), id: 'page-5', op: 'upsert', kill: 'apply:written'},
      {change: (c) => c.delete('page-1'), id: 'page-1', op: 'delete', kill: 'apply:written'},
      {change: (c) => c.delete('page-2'), id: 'page-2', op: 'delete', kill: 'invalidate'},
      {change: (c) => c.patch('page-3').set({title: 'Page 3, v3'}).commit(), id: 'page-3', op: 'upsert', kill: 'apply:start'},
      {change: (c) => c.patch('page-5').set({title: 'Page 5, v2'}).commit(), id: 'page-5', op: 'upsert', kill: 'after the ack'},
    ]
    const delivered = []
    for (const step of plan) {
      // The app runs with the kill point armed for this push (a catch-up run never meets it).
      await app.kill()
      app = await boot({...env, KILL_AT: `${step.kill}@${step.id}@web`})
      const before = (await docs())[step.id]
      await edit(step.change)
      const p = payload(step.op === 'delete' ? before : (await docs())[step.id], step.op)
      delivered.push(p)
      if (step.kill === 'after the ack') {
        const first = await push(app.url, p)
        assert.equal(first.json.status, 'applied', JSON.stringify(first))
        await app.kill()
      } else {
        const sent = push(app.url, p).catch((error) => ({error}))
        await app.wait((l) => l.at === step.kill && l.id === p.id && l.rev === p.rev, `${p.key} reaches ${step.kill}`)
        await app.kill()
        assert.ok((await sent).error, 'the request died with the process')
      }
      kills.push(`${p.key}: ${step.kill}`)
      // Restarted: its boot run may find the change in Sanity first (then the retry is stale), else the retry
      // applies it; after the ack it was committed, so the retry is a duplicate.
      app = await boot(env)
      const retry = await push(app.url, p)
      assert.equal(retry.status, 200, `${p.key} after a kill at ${step.kill}: ${JSON.stringify(retry.json)}`)
      const expected = step.kill === 'after the ack' ? ['duplicate'] : ['applied', 'stale']
      assert.ok(expected.includes(retry.json.status), `${p.key} after a kill at ${step.kill}: ${retry.json.status}`)
    }

    // 3. A lost push: page-4 is edited while the app is down; the restart catches up from its mark, and is
    //    killed in that run after page-4's content was written; the next restart applies it, once.
    await app.kill()
    await edit((c) => c.patch('page-4').set({title: 'Page 4, v3 (its push was lost)'}).commit())
    const lost = (await docs())['page-4']
    app = start({...env, KILL_AT: 'apply:written@page-4@catch-up'})
    await app.wait((l) => l.at === 'apply:written' && l.id === 'page-4' && l.via === 'catch-up', 'the restart run reaches page-4')
    await app.kill()
    kills.push('restart run: apply:written@page-4')
    app = await boot(env)
    assert.notEqual(app.ready.since, null, 'a restarted Machine reads from its mark, not everything')
    assert.equal(app.ready.applied, 1, JSON.stringify(app.ready))
    assert.ok(app.ready.queries <= 2, 'one page of changes and the ids')
    assert.ok(kills.length >= 11, `killed at ${kills.length} points: ${kills.join(', ')}`)

    // 4. From the app's side and the store's side.
    await app.kill()
    const {DatabaseSync} = createRequire(import.meta.url)('node:sqlite')
    const db = new DatabaseSync(env.DB)
    try {
      const sanity = await docs()
      const content = Object.fromEntries(db.prepare('SELECT id, rev FROM content').all().map((r) => [r.id, r.rev]))
      assert.deepEqual(content, Object.fromEntries(Object.values(sanity).map((d) => [d._id, d._rev])), 'the app holds exactly what Sanity has')
      const applied = db.prepare('SELECT id, rev, op FROM applied').all().map((r) => `${r.op}:${r.id}:${r.rev}`)
      assert.equal(new Set(applied).size, applied.length, `no change committed twice: ${applied.join(' ')}`)
      for (const p of delivered) assert.ok(applied.includes(p.key), `${p.key} committed`)
      const marks = Object.fromEntries(db.prepare('SELECT id, rev, deleted FROM sanity_fly_sync_marks').all().map((r) => [r.id, [r.rev, r.deleted]]))
      for (const d of Object.values(sanity)) assert.deepEqual(marks[d._id], [d._rev, 0], `the store's mark of ${d._id}`)
      for (const p of delivered.filter((p) => p.op === 'delete')) assert.deepEqual(marks[p.id], [p.rev, 1], `a tombstone for ${p.id}`)
      const keys = new Set(db.prepare('SELECT key FROM sanity_fly_sync_keys').all().map((r) => r.key))
      // Each change's key: the push's, or the catch-up's when the boot run after the kill applied it first.
      for (const p of delivered) assert.ok(keys.has(p.key) || keys.has(`pull:${p.key}`), `the store remembers ${p.key}`)
      const mark = db.prepare("SELECT value FROM sanity_fly_sync_meta WHERE name = 'catch_up_mark'").get()
      assert.equal(Number(mark.value), Date.parse(lost._updatedAt), 'the catch-up mark is the newest revision applied')
    } finally {
      db.close()
    }
  } finally {
    await lake.close()
    rmSync(dir, {recursive: true, force: true})
  }
})
