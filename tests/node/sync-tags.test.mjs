// The sync-tag Function end to end in one process: the handler (function.ts) runs the core against a loopback
// Machines API whose app requests reach a real receiver per Machine (createReceiver with a `syncTags` hook), and
// the runtime's `done` is a spy. `done` must come after the last Machine's answer, and on every failure path.
import assert from 'node:assert/strict'
import {createServer} from 'node:http'
import {once} from 'node:events'
import {after, before, beforeEach, test} from 'node:test'
import {handler} from '../../function.ts'
import {createReceiver} from '../../receiver/index.ts'

const SECRET = 'sync-tag-test-secret-0123456789'
const APP = 'tags-app'
const FLEET = [
  {id: 'm-ord-1', region: 'ord', state: 'started'},
  {id: 'm-fra-1', region: 'fra', state: 'started'},
  {id: 'm-nrt-1', region: 'nrt', state: 'stopped'},
]

/** One receiver per Machine; its answers are timed (`acks`); `down` Machines do not answer at all. */
function machines() {
  const got = new Map()
  const acks = []
  const down = new Set()
  const receivers = new Map(
    FLEET.map((m) => [
      m.id,
      createReceiver({secret: SECRET, machineId: m.id, apply() {}, syncTags: (tags) => void got.set(m.id, [...(got.get(m.id) ?? []), ...tags])}),
    ]),
  )
  return {got, acks, down, receivers}
}

let server
let base
let fleet

before(async () => {
  server = createServer(async (req, res) => {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    if (req.method === 'GET' && req.url === `/v1/apps/${APP}/machines`) {
      res.writeHead(200, {'content-type': 'application/json'})
      return res.end(JSON.stringify(FLEET.map((m) => ({...m, config: {metadata: {fly_process_group: 'app'}}, checks: []}))))
    }
    const id = req.headers['fly-force-instance-id']
    if (req.method === 'POST' && req.url === '/internal/content-sync' && fleet.receivers.has(id) && !fleet.down.has(id)) {
      const request = new Request(`http://app${req.url}`, {method: 'POST', headers: req.headers, body: Buffer.concat(chunks)})
      const response = await fleet.receivers.get(id)(request)
      const body = await response.text()
      fleet.acks.push({machine: id, status: response.status, at: performance.now()})
      res.writeHead(response.status, {'content-type': 'application/json'})
      return res.end(body)
    }
    // An unreachable Machine: the proxy answers 502.
    res.writeHead(502, {'content-type': 'application/json'})
    res.end(JSON.stringify({error: 'could not reach the Machine'}))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  base = `http://127.0.0.1:${server.address().port}`
})
after(() => server.close())
beforeEach(() => (fleet = machines()))

const ENV = () => ({
  FLY_APP_NAME: APP,
  FLY_API_TOKEN: 'fm2_sync-tag-test',
  FLY_SYNC_SECRET: SECRET,
  FLY_API_URL: base,
  FLY_APP_URL: base,
  FLY_SYNC_BUDGET_MS: '3000',
  FLY_SYNC_REQUEST_TIMEOUT_MS: '500',
})

/** Run the handler with `env` as the process environment and a `done` spy; what it returned or threw, and done's calls. */
async function invoke(data, env = ENV(), done) {
  const saved = {...process.env}
  const calls = []
  const spy = done ?? (async (tags) => (calls.push({tags, at: performance.now()}), new Response(null, {status: 204})))
  Object.assign(process.env, env)
  try {
    const report = await handler({context: {clientOptions: {}}, event: {data}, done: spy})
    return {report, calls}
  } catch (error) {
    return {error, calls}
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
  }
}

test('the tags reach every started Machine\'s hook, and done is called once, after the last answer', async () => {
  const tags = ['s1:abc', 's1:def']
  const {report, calls, error} = await invoke({syncTags: tags})
  assert.equal(error, undefined, error?.message)
  assert.equal(report.status, 'ok')
  assert.equal(report.syncTags.count, 2)
  assert.deepEqual(Object.fromEntries(fleet.got), {'m-ord-1': tags, 'm-fra-1': tags}, 'each started Machine, once; not the stopped one')
  assert.equal(calls.length, 1)
  assert.deepEqual(calls[0].tags, tags)
  const lastAck = Math.max(...fleet.acks.map((a) => a.at))
  assert.ok(calls[0].at >= lastAck, 'done after the last Machine answered')
})

test('an unreachable Machine: done is still called, after the run, and the report names the Machine', async () => {
  fleet.down.add('m-fra-1')
  const {error, calls} = await invoke({syncTags: ['s1:x']})
  assert.ok(error, 'the run is partial: the invocation fails so Sanity records it')
  const fra = error.report.targets[0].machines.find((m) => m.id === 'm-fra-1')
  assert.equal(fra.sync, 'failed')
  assert.deepEqual(fleet.got.get('m-ord-1'), ['s1:x'])
  assert.equal(calls.length, 1, 'done called once')
  assert.ok(calls[0].at >= Math.max(...fleet.acks.map((a) => a.at)))
})

test('a receiver without a syncTags hook is named, not counted as delivered', async () => {
  fleet.receivers.set('m-ord-1', createReceiver({secret: SECRET, machineId: 'm-ord-1', apply() {}}))
  const {error, calls} = await invoke({syncTags: ['s1:x']})
  const ord = error.report.targets[0].machines.find((m) => m.id === 'm-ord-1')
  assert.equal(ord.sync, 'failed')
  assert.match(ord.error.message, /syncTags/)
  assert.equal(calls.length, 1)
})

test('done is called when the run cannot even start: bad configuration, bad tags', async () => {
  const {FLY_SYNC_SECRET: _, ...noSecret} = ENV()
  delete process.env.FLY_SYNC_SECRET
  const misconfigured = await invoke({syncTags: ['s1:x']}, noSecret)
  assert.match(misconfigured.error.message, /config error.*FLY_SYNC_SECRET/)
  assert.deepEqual(misconfigured.calls.map((c) => c.tags), [['s1:x']])
  const badTags = await invoke({syncTags: ['s1:x', 'not a tag']})
  assert.match(badTags.error.message, /input error.*event\.data\.syncTags\[1\]/)
  assert.equal(badTags.calls.length, 1, 'done still called (with the tags as Sanity sent them)')
  assert.equal(fleet.acks.length, 0, 'nothing pushed')
})

test('a done that fails is logged, never thrown over the run\'s outcome', async () => {
  const {report, error} = await invoke({syncTags: ['s1:x']}, ENV(), async () => {
    throw new Error('callback endpoint down')
  })
  assert.equal(error, undefined, error?.message)
  assert.equal(report.status, 'ok')
})

test('a document Function invocation is unchanged: a field named syncTags is the document\'s, and a done stub (the local CLI passes one to every handler) is not called', async () => {
  const doc = {_id: 'page-1', _type: 'page', _rev: 'r1', _updatedAt: new Date(Date.now() - 1000).toISOString(), syncTags: ['mine']}
  const saved = {...process.env}
  Object.assign(process.env, ENV())
  try {
    const calls = []
    const report = await handler({context: {}, event: {data: doc}, done: async (tags) => (calls.push(tags), new Response(null, {status: 204}))})
    assert.equal(report.change.id, 'page-1')
    assert.deepEqual(calls, [], 'done is the sync-tag event\'s only')
    assert.equal(fleet.got.size, 0, 'no tags handed to any hook')
  } finally {
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
  }
})
