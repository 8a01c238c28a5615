// The local Fly: the Machines API emulator (local/fly/machines-api.mjs) and the fleet + proxy (local/fly/fleet.mjs).
// Each test starts and stops its own servers. Nothing sleeps for a fixed time to stand in for a state change: tests
// wait on the emulator's own events (`until`, `waitFor`, `/wait`), poll with a bounded number of attempts, or move
// a manual clock.
import {test} from 'node:test'
import assert from 'node:assert/strict'

import {startMachinesApi, DEFAULT_TOKEN} from '../../local/fly/machines-api.mjs'
import {startFleet} from '../../local/fly/fleet.mjs'
import {createManualClock} from '../../local/fly/clock.mjs'
import {readFileSync} from 'node:fs'
import {createHash} from 'node:crypto'
import {createBackend, loadRawSpec, loadPatchedSpec, SPEC_PATCHES, SPEC_FILE, SPEC_SHA256} from '../../local/fly/spec.mjs'

const FAST = {stopMs: [20, 40], startMs: [30, 60], checksCriticalMs: 300}
const JSON_TYPE = {'content-type': 'application/json'}

/**
 * One request to the emulator with the default token (unless `token` says otherwise).
 * @param {{url: string}} api @param {string} method @param {string} path
 * @param {{headers?: Record<string, string>, body?: unknown, token?: string | null, signal?: AbortSignal}} [o]
 */
async function call(api, method, path, o = {}) {
  const headers = {...(o.token === null ? {} : {authorization: o.token ?? `Bearer ${DEFAULT_TOKEN}`}), ...o.headers}
  const body = o.body === undefined ? undefined : typeof o.body === 'string' ? o.body : JSON.stringify(o.body)
  if (o.body !== undefined && !Object.keys(headers).some((k) => k.toLowerCase() === 'content-type')) headers['content-type'] = 'application/json'
  const r = await fetch(`${api.url}${path}`, {method, headers, body, signal: o.signal})
  const text = await r.text()
  let json
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return {status: r.status, json, text, headers: r.headers}
}

/** Poll `check` up to `attempts` times, `everyMs` apart; return its first truthy value. */
async function pollFor(check, {attempts = 100, everyMs = 10, what = 'condition'} = {}) {
  for (let i = 0; i < attempts; i++) {
    const v = await check()
    if (v) return v
    await new Promise((r) => setTimeout(r, everyMs))
  }
  throw new Error(`${what}: not reached after ${attempts} attempts`)
}

const machinesPath = (app = 'web') => `/v1/apps/${app}/machines`
const RFC3339 = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/

test('the spec: the patched document is valid OpenAPI, and the engine’s requests validate against the unpatched one', async () => {
  const raw = await createBackend(loadRawSpec())
  const patched = await createBackend(loadPatchedSpec())
  for (const backend of [raw, patched]) await backend.loadDocument() // quick mode loads it lazily
  assert.ok(raw.validateDefinition(), 'the published spec is a valid OpenAPI 3.0 document')
  assert.ok(patched.validateDefinition(), 'so is the patched one')
  assert.equal(SPEC_PATCHES.length, 4)
  assert.equal(createHash('sha256').update(readFileSync(SPEC_FILE)).digest('hex'), SPEC_SHA256, 'the copy is Fly’s document byte for byte')

  const base = '/v1/apps/web/machines'
  const auth = {authorization: 'FlyV1 fm2_x'}
  const validate = (backend, op, req) => backend.validator.validateRequest({headers: auth, ...req}, op)
  // Exactly what src/engine.rs `request_for` sends.
  const engine = [
    ['Machines_list', {method: 'GET', path: base}],
    ['Machines_show', {method: 'GET', path: `${base}/3d8d413b29d089`}],
    ['Machines_create_lease', {method: 'POST', path: `${base}/3d8d413b29d089/lease`, headers: {...auth, ...JSON_TYPE}, body: {description: 'sanity-fly-sync rolling restart', ttl: 30}}],
    ['Machines_restart', {method: 'POST', path: `${base}/3d8d413b29d089/restart`, headers: {...auth, 'fly-machine-lease-nonce': 'abc'}}],
    ['Machines_release_lease', {method: 'DELETE', path: `${base}/3d8d413b29d089/lease`, headers: {...auth, 'fly-machine-lease-nonce': 'abc'}}],
  ]
  for (const [op, req] of engine) {
    for (const backend of [raw, patched]) assert.equal(validate(backend, op, req).valid, true, `${op} validates`)
  }
  // What fly-go sends and the published spec rejects; the patches accept it.
  const flyGo = [
    ['Machines_restart', {method: 'POST', path: `${base}/m/restart?force_stop=false&timeout=10s&signal=SIGTERM`}],
    ['Machines_create_lease', {method: 'POST', path: `${base}/m/lease?ttl=120`}],
    ['Machines_wait', {method: 'GET', path: `${base}/m/wait?state=started,stopped&timeout=60`}],
  ]
  for (const [op, req] of flyGo) {
    assert.equal(validate(raw, op, req).valid, false, `${op} ${req.path} is outside the published spec`)
    assert.equal(validate(patched, op, req).valid, true, `${op} ${req.path} passes the patched spec`)
  }
  // The spec's own rules still hold after patching.
  const bad = [
    ['Machines_create_lease', {method: 'POST', path: `${base}/m/lease`, headers: {...auth, ...JSON_TYPE}, body: {ttl: '30'}}],
    ['Machines_restart', {method: 'POST', path: `${base}/m/restart?signal=SIGFOO`}],
    ['Machines_restart', {method: 'POST', path: `${base}/m/restart?bogus=1`}],
    ['Machines_release_lease', {method: 'DELETE', path: `${base}/m/lease`}],
    ['Machines_wait', {method: 'GET', path: `${base}/m/wait?timeout=60s`}],
  ]
  for (const [op, req] of bad) assert.equal(validate(patched, op, req).valid, false, `${op} ${req.path} is rejected`)
})

test('requests are validated against the spec: bad ones get 400, the engine’s get through', async () => {
  const api = await startMachinesApi({apps: {web: {machines: 2}}, timings: FAST})
  try {
    const [m] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    const bad = [
      ['POST', `${p}/lease`, {body: {ttl: '30'}}, /requestBody\.ttl must be integer/],
      ['POST', `${p}/lease`, {body: '{"ttl": 3'}, /requestBody must be object/],
      ['POST', `${p}/lease`, {body: ['x']}, /requestBody must be object/],
      ['POST', `${p}/restart?signal=SIGFOO`, {}, /query\.signal must be one of SIGHUP/],
      ['GET', `${machinesPath()}?bogus=1`, {}, /unknown parameter `bogus`/],
      ['GET', `${machinesPath()}?summary=maybe`, {}, /query\.summary must be boolean/],
      ['DELETE', `${p}/lease`, {}, /header must have required property 'fly-machine-lease-nonce'/],
      ['GET', `${p}/wait?timeout=60s`, {}, /query\.timeout must be integer/],
      ['GET', `${p}/wait?state=running`, {}, /query\.state/],
      ['POST', `${p}/stop`, {body: {signal: 'SIGSTOP'}}, /requestBody\.signal must be one of/],
      ['POST', `${p}/metadata/k`, {body: {value: 1}}, /requestBody\.value must be string/],
    ]
    for (const [method, path, o, re] of bad) {
      const r = await call(api, method, path, o)
      assert.equal(r.status, 400, `${method} ${path}: ${r.text}`)
      assert.match(r.json.error, re)
      assert.match(r.json.error, /^invalid request \(Machines_\w+\): /)
    }
    assert.equal(api.state(m.id), 'started', 'no invalid request changed anything')

    // The engine's sequence, header for header.
    const auth = {authorization: `FlyV1 ${DEFAULT_TOKEN}`}
    assert.equal((await call(api, 'GET', machinesPath(), {token: null, headers: auth})).status, 200)
    assert.equal((await call(api, 'GET', p, {token: null, headers: auth})).status, 200)
    const lease = await call(api, 'POST', `${p}/lease`, {token: null, headers: {...auth, ...JSON_TYPE}, body: {description: 'sanity-fly-sync rolling restart', ttl: 30}})
    assert.equal(lease.status, 201, lease.text)
    const nonce = lease.json.data.nonce
    assert.equal((await call(api, 'POST', `${p}/restart`, {token: null, headers: {...auth, 'fly-machine-lease-nonce': nonce}})).status, 200)
    assert.equal((await call(api, 'DELETE', `${p}/lease`, {token: null, headers: {...auth, 'fly-machine-lease-nonce': nonce}})).status, 200)
    // And fly-go's forms.
    await api.waitFor(m.id, 'started')
    assert.equal((await call(api, 'POST', `${p}/lease?ttl=120`)).status, 201)
    assert.equal((await call(api, 'GET', `${p}/wait?state=started&state=stopped&timeout=1`)).status, 200)
    assert.equal((await call(api, 'POST', `${p}/stop`, {headers: {'fly-machine-lease-nonce': api.machine(m.id).lease.nonce}})).status, 200)
    // Paths outside the spec.
    const unknown = await call(api, 'GET', '/v1/apps/web/volcanoes')
    assert.equal(unknown.status, 404)
    assert.match(unknown.json.error, /^not found/)
    const notServed = await call(api, 'POST', `${p}/cordon`)
    assert.equal(notServed.status, 501)
    assert.match(notServed.json.error, /Machines_cordon/)
    assert.equal(api.stats.statuses['400'], bad.length)
  } finally {
    await api.close()
  }
})

test('auth: Bearer, FlyV1 and Bearer FlyV1 pass; anything else is 401; tokens are scoped to apps', async () => {
  const api = await startMachinesApi({
    apps: {web: {machines: 1}, other: {machines: 1}},
    tokens: {'FlyV1 fm2_web_only': ['web'], fm2_all: '*'},
    timings: FAST,
    rateLimits: false,
  })
  try {
    for (const token of ['Bearer fm2_web_only', 'FlyV1 fm2_web_only', 'Bearer FlyV1 fm2_web_only', 'bearer  flyv1 fm2_web_only']) {
      const r = await call(api, 'GET', machinesPath('web'), {token})
      assert.equal(r.status, 200, token)
      assert.match(r.headers.get('fly-request-id'), /^[0-9A-Z]{26}-lcl$/)
      assert.equal(r.headers.get('content-type'), 'application/json; charset=utf-8')
    }
    const denied = [
      [null, 'web'],
      ['Bearer nope', 'web'],
      ['fm2_web_only', 'web'], // no scheme at all
      ['Bearer fm2_web_only', 'other'], // a deploy token for another app
      ['Basic fm2_all', 'web'],
    ]
    for (const [token, app] of denied) {
      const r = await call(api, 'GET', machinesPath(app), {token})
      assert.equal(r.status, 401, `${token} on ${app}`)
      assert.deepEqual(r.json, {error: 'Authenticate: token validation error'})
    }
    assert.equal((await call(api, 'GET', machinesPath('other'), {token: 'Bearer fm2_all'})).status, 200)
    const noApp = await call(api, 'GET', machinesPath('ghost'), {token: 'Bearer fm2_all'})
    assert.deepEqual([noApp.status, noApp.json], [404, {error: 'app not found'}])
    const noMachine = await call(api, 'GET', `${machinesPath('web')}/00000000000000`, {token: 'Bearer fm2_all'})
    assert.deepEqual([noMachine.status, noMachine.json], [404, {error: 'machine not found'}])
    // A Machine of another app is not found through this app.
    const otherId = api.machines('other')[0].id
    assert.equal((await call(api, 'GET', `${machinesPath('web')}/${otherId}`, {token: 'Bearer fm2_all'})).status, 404)
  } finally {
    await api.close()
  }
})

test('list: region, state (comma list), summary and include_deleted filters; Machines are Fly-shaped', async () => {
  const api = await startMachinesApi({
    apps: {
      web: [
        {region: 'ord', state: 'started'},
        {region: 'ord', state: 'stopped'},
        {region: 'fra', state: 'started'},
        {region: 'fra', state: 'suspended'},
        {region: 'nrt', state: 'destroyed'},
        {region: 'nrt', state: 'started', checks: false, processGroup: 'worker'},
      ],
    },
    timings: FAST,
    rateLimits: false,
  })
  try {
    const ids = (r) => r.json.map((m) => `${m.region}:${m.state}`).sort()
    const all = await call(api, 'GET', machinesPath())
    assert.deepEqual(ids(all), ['fra:started', 'fra:suspended', 'nrt:started', 'ord:started', 'ord:stopped'])
    assert.deepEqual(ids(await call(api, 'GET', `${machinesPath()}?include_deleted=true`)), [...ids(all), 'nrt:destroyed'].sort())
    assert.deepEqual(ids(await call(api, 'GET', `${machinesPath()}?region=fra`)), ['fra:started', 'fra:suspended'])
    assert.deepEqual(ids(await call(api, 'GET', `${machinesPath()}?state=stopped,suspended`)), ['fra:suspended', 'ord:stopped'])
    assert.deepEqual(ids(await call(api, 'GET', `${machinesPath()}?state=started&region=ord`)), ['ord:started'])

    const summary = await call(api, 'GET', `${machinesPath()}?summary=true`)
    for (const m of summary.json) {
      for (const k of ['config', 'checks', 'events', 'host_status', 'image_ref']) assert.ok(!(k in m), `summary omits ${k}`)
      for (const k of ['id', 'name', 'state', 'region', 'instance_id', 'private_ip', 'created_at', 'updated_at']) assert.ok(k in m, `summary keeps ${k}`)
    }

    const full = all.json.find((m) => m.region === 'ord' && m.state === 'started')
    assert.match(full.id, /^[0-9a-f]{14}$/)
    assert.match(full.instance_id, /^[0-9A-Z]{26}$/)
    assert.match(full.created_at, RFC3339)
    assert.equal(full.host_status, 'ok')
    assert.equal(full.config.metadata.fly_process_group, 'app')
    assert.deepEqual(full.checks.map((c) => [c.name, c.status]), [['servicecheck-00-http-8080', 'passing']])
    assert.ok(full.events.length >= 2)
    for (const e of full.events) assert.ok(Number.isInteger(e.timestamp) && e.timestamp > 1e12, 'ms timestamps')
    assert.ok(full.events[0].timestamp >= full.events.at(-1).timestamp, 'newest first')
    assert.equal(full.events.at(-1).type, 'launch')
    const worker = all.json.find((m) => m.region === 'nrt')
    assert.deepEqual(worker.checks, [])
    assert.equal(worker.config.metadata.fly_process_group, 'worker')

    // The answers match the spec's response schemas.
    const backend = await createBackend(loadRawSpec())
    assert.equal(backend.validator.validateResponse(all.json, 'Machines_list', 200).valid, true)
    assert.equal(backend.validator.validateResponse(full, 'Machines_show', 200).valid, true)
  } finally {
    await api.close()
  }
})

test('restart: started → stopping → starting → started, restart/start events appended, checks critical then passing', async () => {
  const clock = createManualClock()
  const timings = {stopMs: 100, startMs: 200, checksCriticalMs: 300}
  const api = await startMachinesApi({apps: {web: {machines: 2}}, clock, timings})
  try {
    const [m, other] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    const before = (await call(api, 'GET', p)).json
    const r = await call(api, 'POST', `${p}/restart?force_stop=false&timeout=10s&signal=SIGTERM`)
    assert.deepEqual([r.status, r.json], [200, {ok: true}])
    assert.equal((await call(api, 'GET', p)).json.state, 'stopping')

    const pending = clock.pending()
    const wait = call(api, 'GET', `${p}/wait?state=started&timeout=10`)
    await pollFor(() => clock.pending() > pending, {what: 'the wait is armed'})
    clock.advance(100)
    assert.equal((await call(api, 'GET', p)).json.state, 'starting')
    clock.advance(200)
    const waited = await wait
    assert.equal(waited.status, 200)
    assert.deepEqual(waited.json, {ok: true, state: 'started', version: before.instance_id, event_id: waited.json.event_id})
    const justStarted = (await call(api, 'GET', p)).json
    assert.equal(justStarted.state, 'started')
    assert.equal(justStarted.checks[0].status, 'critical', 'checks are critical for checksCriticalMs after a start')
    assert.equal(justStarted.instance_id, before.instance_id, 'a restart keeps the version')
    const fresh = justStarted.events.slice(0, justStarted.events.length - before.events.length)
    assert.deepEqual(fresh.map((e) => `${e.type}/${e.status}`), ['start/started', 'start/starting', 'restart/stopping'])
    assert.deepEqual(fresh.map((e) => e.timestamp - fresh[2].timestamp), [300, 100, 0], 'ms timestamps, newest first')
    assert.equal(waited.json.event_id, fresh[0].id)

    clock.advance(299)
    assert.equal((await call(api, 'GET', p)).json.checks[0].status, 'critical')
    clock.advance(1)
    assert.equal((await call(api, 'GET', p)).json.checks[0].status, 'passing')

    const timeline = api.timeline(m.id)
    assert.deepEqual(
      timeline.map((e) => `${e.at - timeline[1].at} ${e.state}/${e.checks} ${e.cause}`),
      [`${timeline[0].at - timeline[1].at} started/passing init`, '0 stopping/critical restart', '100 starting/critical restart', '300 started/critical restart', '600 started/passing checks'],
    )
    assert.equal(api.timeline(other.id).length, 1, 'the other Machine did not move')

    // Only a started Machine restarts.
    await call(api, 'POST', `${p}/stop`)
    clock.advance(100)
    assert.equal(api.state(m.id), 'stopped')
    const refused = await call(api, 'POST', `${p}/restart`)
    assert.deepEqual([refused.status, refused.json], [412, {error: 'failed_precondition: unable to restart machine, not currently started or stopped'}])
    assert.equal(api.machine(m.id).counts.restarts, 1)
    assert.deepEqual(api.stats.byMachine[m.id].restart, 2)
  } finally {
    await api.close()
  }
})

test('metadata: get all, set, get one, delete; visible in config.metadata; the version does not change', async () => {
  const api = await startMachinesApi({apps: {web: {machines: 1}}, timings: FAST, rateLimits: false})
  try {
    const [m] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    const all = await call(api, 'GET', `${p}/metadata`)
    assert.equal(all.status, 200)
    assert.equal(all.json.fly_process_group, 'app')
    assert.equal(all.json.fly_platform_version, 'v2')
    const set = await call(api, 'POST', `${p}/metadata/content_rev`, {body: {value: 'r42'}})
    assert.deepEqual([set.status, set.text], [204, ''])
    assert.deepEqual((await call(api, 'GET', `${p}/metadata/content_rev`)).json, {value: 'r42'})
    const machine = (await call(api, 'GET', p)).json
    assert.equal(machine.config.metadata.content_rev, 'r42')
    assert.equal(machine.instance_id, m.instanceId, 'metadata changes keep the version')
    assert.equal(machine.state, 'started', 'and do not restart')
    assert.equal((await call(api, 'DELETE', `${p}/metadata/content_rev`)).status, 204)
    const missing = await call(api, 'GET', `${p}/metadata/content_rev`)
    assert.deepEqual([missing.status, missing.json], [404, {error: 'metadata key not found'}])
    assert.ok(!('content_rev' in (await call(api, 'GET', `${p}/metadata`)).json))
  } finally {
    await api.close()
  }
})

test('stop (with or without a body) and start', async () => {
  const api = await startMachinesApi({apps: {web: [{state: 'started'}, {state: 'suspended'}, {state: 'created'}]}, timings: FAST})
  try {
    const [m, suspended, created] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    assert.equal((await call(api, 'POST', `${p}/stop`, {body: {signal: 'SIGTERM', timeout: '1s'}})).status, 200)
    assert.equal((await call(api, 'GET', `${p}/wait?state=stopped&timeout=5`)).json.state, 'stopped')
    const events = (await call(api, 'GET', p)).json.events
    assert.deepEqual(events.slice(0, 2).map((e) => `${e.type}/${e.status}`), ['exit/stopped', 'stop/stopping'])
    assert.equal(events[0].request.exit_event.requested_stop, true)
    assert.equal((await call(api, 'POST', `${p}/stop`)).status, 200, 'stopping a stopped Machine is a no-op')

    const started = await call(api, 'POST', `${p}/start`)
    assert.deepEqual([started.status, started.json], [200, {previous_state: 'stopped', migrated: false, new_host: ''}])
    assert.equal((await call(api, 'GET', `${p}/wait?state=settled&timeout=5`)).json.state, 'started')
    const again = await call(api, 'POST', `${p}/start`)
    assert.deepEqual([again.status, again.json.error], [412, 'failed_precondition: machine still active, refusing to start'])

    // A suspended Machine stops at once (its snapshot is gone); a created one cannot start.
    assert.equal((await call(api, 'POST', `${machinesPath()}/${suspended.id}/stop`)).status, 200)
    assert.equal(api.state(suspended.id), 'stopped')
    const never = await call(api, 'POST', `${machinesPath()}/${created.id}/start`)
    assert.deepEqual([never.status, never.json.error], [412, "failed_precondition: unable to start machine from current state: 'created'"])
  } finally {
    await api.close()
  }
})

test('leases: envelope, 409 on conflict and on unguarded mutations, refresh, release needs the nonce, expiry by the clock', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 2}}, clock, timings: {...FAST, stopMs: 100, startMs: 100}})
  try {
    const [m] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    const lease = await call(api, 'POST', `${p}/lease`, {body: {description: 'rolling restart', ttl: 30}})
    assert.equal(lease.status, 201)
    assert.equal(lease.json.status, 'success')
    const {nonce, expires_at, owner, description, version} = lease.json.data
    assert.match(nonce, /^[0-9a-f]{12}$/)
    assert.equal(expires_at, Math.floor((clock.now() + 30_000) / 1000), 'unix seconds')
    assert.match(owner, /^[0-9a-f-]{36}@tokens\.fly\.io$/)
    assert.equal(description, 'rolling restart')
    assert.equal(version, m.instanceId)
    assert.deepEqual((await call(api, 'GET', `${p}/lease`)).json, lease.json)

    const held = new RegExp(`^machine ID ${m.id} lease currently held by ${owner.replaceAll('.', '\\.')}, expires at \\d{4}-\\d\\d-\\d\\dT\\d\\d:\\d\\d:\\d\\dZ$`)
    const conflict = await call(api, 'POST', `${p}/lease`, {body: {ttl: 30}})
    assert.equal(conflict.status, 409)
    assert.match(conflict.json.error, held)
    for (const action of ['restart', 'stop', 'start']) {
      for (const headers of [{}, {'fly-machine-lease-nonce': 'not-the-nonce'}]) {
        const r = await call(api, 'POST', `${p}/${action}`, {headers})
        assert.equal(r.status, 409, `${action} with ${JSON.stringify(headers)}`)
        assert.match(r.json.error, held)
      }
    }
    assert.equal(api.state(m.id), 'started')
    // Reads and metadata are not guarded.
    assert.equal((await call(api, 'GET', p)).status, 200)
    assert.equal((await call(api, 'POST', `${p}/metadata/role`, {body: {value: 'primary'}})).status, 204)

    // Refresh: same nonce, later expiry.
    clock.advance(10_000)
    const refreshed = await call(api, 'POST', `${p}/lease`, {headers: {'fly-machine-lease-nonce': nonce}, body: {ttl: 60}})
    assert.equal(refreshed.status, 201)
    assert.equal(refreshed.json.data.nonce, nonce)
    assert.equal(refreshed.json.data.expires_at, Math.floor((clock.now() + 60_000) / 1000))

    const restart = await call(api, 'POST', `${p}/restart`, {headers: {'fly-machine-lease-nonce': nonce}})
    assert.equal(restart.status, 200)
    clock.advance(250)
    assert.equal(api.state(m.id), 'started')

    const noNonce = await call(api, 'DELETE', `${p}/lease`)
    assert.equal(noNonce.status, 400, 'the spec makes the nonce header required')
    const wrong = await call(api, 'DELETE', `${p}/lease`, {headers: {'fly-machine-lease-nonce': 'nope'}})
    assert.equal(wrong.status, 409)
    const released = await call(api, 'DELETE', `${p}/lease`, {headers: {'fly-machine-lease-nonce': nonce}})
    assert.deepEqual([released.status, released.json], [200, {status: 'success', data: {ok: true}}])
    const gone = await call(api, 'DELETE', `${p}/lease`, {headers: {'fly-machine-lease-nonce': nonce}})
    assert.deepEqual([gone.status, gone.json], [404, {error: 'lease not found'}])
    assert.equal((await call(api, 'GET', `${p}/lease`)).status, 404)

    // fly-go's form (no body, ?ttl=) — and expiry: after the TTL the lease is gone and anyone may take it.
    const short = await call(api, 'POST', `${p}/lease?ttl=5`)
    assert.equal(short.status, 201)
    clock.advance(4_000)
    assert.equal((await call(api, 'POST', `${p}/lease`, {body: {}})).status, 409)
    clock.advance(1_000)
    const after = await call(api, 'POST', `${p}/lease`, {body: {}})
    assert.equal(after.status, 201)
    assert.notEqual(after.json.data.nonce, short.json.data.nonce)
    assert.equal(after.json.data.expires_at, Math.floor((clock.now() + 30_000) / 1000), 'default TTL 30 s')
  } finally {
    await api.close()
  }
})

test('rate limits: per (Machine, action) token buckets, 429 with or without Retry-After, configurable and off', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 2}}, clock, timings: FAST})
  try {
    const [a, b] = api.machines('web')
    const meta = (id) => call(api, 'GET', `${machinesPath()}/${id}/metadata`)
    const statuses = async (n, f) => {
      const out = []
      for (let i = 0; i < n; i++) out.push((await f()).status)
      return out
    }
    assert.deepEqual(await statuses(4, () => meta(a.id)), [200, 200, 200, 429], 'burst 3')
    const limited = await meta(a.id)
    assert.deepEqual(limited.json, {error: 'rate limit exceeded'})
    assert.equal(limited.headers.get('retry-after'), null, 'no Retry-After by default')
    assert.equal((await meta(b.id)).status, 200, 'another Machine has its own bucket')
    assert.equal((await call(api, 'GET', `${machinesPath()}/${a.id}/lease`)).status, 404, 'another action has its own bucket')
    clock.advance(1_000)
    assert.deepEqual(await statuses(2, () => meta(a.id)), [200, 429], '1 per second')

    const get = () => call(api, 'GET', `${machinesPath()}/${a.id}`)
    assert.deepEqual(await statuses(11, get), [...Array(10).fill(200), 429], 'get: burst 10')
    clock.advance(200)
    assert.deepEqual(await statuses(2, get), [200, 429], 'get: 5 per second')
    assert.equal(api.stats.rateLimited.metadata_get, 3)
    assert.equal(api.stats.rateLimited.get, 2)
    assert.equal(api.stats.rateLimitedTotal, 5)
    assert.equal(api.log.filter((e) => e.fault === 'rate_limit').length, 5)
  } finally {
    await api.close()
  }

  const withHeader = await startMachinesApi({apps: {web: {machines: 1}}, clock: createManualClock(), rateLimits: {retryAfter: true, default: {rate: 0.5, burst: 1}}})
  try {
    const [m] = withHeader.machines('web')
    assert.equal((await call(withHeader, 'GET', `${machinesPath()}/${m.id}/metadata`)).status, 200)
    const limited = await call(withHeader, 'GET', `${machinesPath()}/${m.id}/metadata`)
    assert.equal(limited.status, 429)
    assert.equal(limited.headers.get('retry-after'), '2', 'whole seconds until the next token at 0.5/s')
  } finally {
    await withHeader.close()
  }

  const unlimited = await startMachinesApi({apps: {web: {machines: 1}}, rateLimits: false})
  try {
    const [m] = unlimited.machines('web')
    for (let i = 0; i < 25; i++) assert.equal((await call(unlimited, 'GET', `${machinesPath()}/${m.id}/metadata`)).status, 200)
    assert.equal(unlimited.stats.rateLimitedTotal, 0)
  } finally {
    await unlimited.close()
  }
})

test('faults: scripted 429 (with/without Retry-After) and 5xx, ambiguous 408 restart, hang', async () => {
  const api = await startMachinesApi({apps: {web: {machines: 2}}, timings: FAST, faults: [{action: 'list', status: 502, times: 1}]})
  try {
    const [m, other] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    const first = await call(api, 'GET', machinesPath())
    assert.deepEqual([first.status, first.json], [502, {error: 'unavailable: bad gateway'}], 'a rule given at start')
    assert.equal((await call(api, 'GET', machinesPath())).status, 200, 'used up')

    api.faults.rateLimit('restart', {machine: m.id, retryAfter: 7})
    api.faults.rateLimit('restart', {machine: m.id})
    const r1 = await call(api, 'POST', `${p}/restart`)
    assert.deepEqual([r1.status, r1.headers.get('retry-after'), r1.json], [429, '7', {error: 'rate limit exceeded'}])
    const r2 = await call(api, 'POST', `${p}/restart`)
    assert.deepEqual([r2.status, r2.headers.get('retry-after')], [429, null])
    assert.equal(api.machine(m.id).counts.restarts, 0, 'a 429 does nothing')

    const rule = api.faults.serverError('get', {status: 500, times: 2})
    assert.equal((await call(api, 'GET', p)).status, 500)
    assert.equal((await call(api, 'GET', `${machinesPath()}/${other.id}`)).status, 500, 'any Machine unless one is named')
    assert.equal((await call(api, 'GET', p)).status, 200)
    assert.equal(rule.hits, 2)

    api.faults.ambiguousRestart(m.id)
    const ambiguous = await call(api, 'POST', `${p}/restart`)
    assert.equal(ambiguous.status, 408)
    assert.match(ambiguous.json.error, /^deadline_exceeded: /)
    assert.equal(api.machine(m.id).counts.restarts, 1, 'the restart happened anyway')
    assert.ok(api.timeline(m.id).some((e) => e.state === 'stopping'))
    await api.waitFor(m.id, 'started')
    assert.equal(api.log.filter((e) => e.fault === 'fault:ambiguous').length, 1)

    api.faults.inject({action: 'metadata_get', machine: m.id, hang: true, label: 'hang'})
    await assert.rejects(call(api, 'GET', `${p}/metadata`, {signal: AbortSignal.timeout(150)}), {name: 'TimeoutError'})
    assert.equal((await call(api, 'GET', `${p}/metadata`)).status, 200)
    assert.equal(api.stats.faults.restart, 3)
  } finally {
    await api.close()
  }
})

test('faults: stuck in starting (then failed), unreachable host, lease held elsewhere, checks stuck critical', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 4}}, clock, timings: {stopMs: 100, startMs: 100, checksCriticalMs: 100}})
  try {
    const [stuck, failing, unreachable, leased] = api.machines('web').map((m) => m.id)
    const path = (id, rest = '') => `${machinesPath()}/${id}${rest}`

    api.faults.stuck(stuck)
    assert.equal((await call(api, 'POST', path(stuck, '/restart'))).status, 200)
    clock.advance(60_000)
    assert.equal(api.state(stuck), 'starting', 'never completes')
    await call(api, 'POST', path(stuck, '/stop'))
    clock.advance(100)
    await call(api, 'POST', path(stuck, '/start'))
    clock.advance(100)
    assert.equal(api.state(stuck), 'started', 'a stuck fault applies once by default')

    api.faults.stuck(failing, {failAfterMs: 5_000})
    await call(api, 'POST', path(failing, '/restart'))
    clock.advance(4_000)
    assert.equal(api.state(failing), 'starting')
    clock.advance(1_200)
    assert.equal(api.state(failing), 'failed')
    const failed = (await call(api, 'GET', path(failing))).json
    assert.equal(`${failed.events[0].type}/${failed.events[0].status}`, 'exit/failed')
    const recovered = await call(api, 'POST', path(failing, '/start'))
    assert.equal(recovered.json.previous_state, 'failed')

    api.faults.unreachable(unreachable)
    const u = (await call(api, 'GET', path(unreachable))).json
    assert.equal(u.host_status, 'unreachable')
    assert.ok(!('config' in u) && u.incomplete_config.metadata.fly_process_group === 'app')
    const listed = (await call(api, 'GET', machinesPath())).json.find((m) => m.id === unreachable)
    assert.equal(listed.host_status, 'unreachable')
    const mut = await call(api, 'POST', path(unreachable, '/restart'))
    assert.equal(mut.status, 503)
    assert.match(mut.json.error, /^unavailable: /)
    api.faults.unreachable(unreachable, false)
    assert.equal((await call(api, 'GET', path(unreachable))).json.host_status, 'ok')

    const theirs = api.faults.leaseHeldElsewhere(leased, {owner: 'deployer@tokens.fly.io', ttlS: 120})
    const grab = await call(api, 'POST', path(leased, '/lease'), {body: {ttl: 30}})
    assert.equal(grab.status, 409)
    assert.match(grab.json.error, new RegExp(`^machine ID ${leased} lease currently held by deployer@tokens\\.fly\\.io, expires at `))
    assert.equal((await call(api, 'POST', path(leased, '/restart'))).status, 409)
    assert.equal((await call(api, 'POST', path(leased, '/restart'), {headers: {'fly-machine-lease-nonce': theirs.nonce}})).status, 200)

    api.faults.checksCritical(unreachable)
    await call(api, 'POST', path(unreachable, '/restart'))
    clock.advance(10_000)
    const critical = (await call(api, 'GET', path(unreachable))).json
    assert.deepEqual([critical.state, critical.checks[0].status], ['started', 'critical'])
    api.faults.checksCritical(unreachable, false)
    assert.equal(api.machine(unreachable).checks, 'passing')
    assert.deepEqual(
      api.timeline(failing).map((e) => `${e.state}/${e.checks}`),
      ['started/passing', 'stopping/critical', 'starting/critical', 'failed/critical', 'starting/critical', 'started/critical', 'started/passing'],
    )
  } finally {
    await api.close()
  }
})

test('wait: 200 when reached (lists, settled), 408 deadline_exceeded at the timeout, at most 60 s', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 1}}, clock, timings: {stopMs: 1_000, startMs: 1_000, checksCriticalMs: 0}})
  try {
    const [m] = api.machines('web')
    const p = `${machinesPath()}/${m.id}`
    /** Start a wait, let it reach the emulator (it arms a timer), then move the clock. */
    const waitThenAdvance = async (query, ms) => {
      const pending = clock.pending()
      const r = call(api, 'GET', `${p}/wait?${query}`)
      await pollFor(() => clock.pending() > pending, {what: 'the wait is armed'})
      clock.advance(ms)
      return r
    }
    assert.equal((await call(api, 'GET', `${p}/wait`)).json.state, 'started', 'default: started')
    assert.equal((await call(api, 'GET', `${p}/wait?state=stopped,started`)).status, 200)

    const timedOut = await waitThenAdvance('state=stopped&timeout=2', 2_000)
    assert.deepEqual([timedOut.status, timedOut.json], [408, {error: 'deadline_exceeded: machine failed to reach desired state, stopped, currently started'}])

    const clamped = await waitThenAdvance('state=destroyed&timeout=600', 60_000)
    assert.equal(clamped.status, 408, 'blocks at most 60 s')

    await call(api, 'POST', `${p}/stop`)
    assert.equal(api.state(m.id), 'stopping')
    const settled = await waitThenAdvance('state=settled&timeout=30', 1_000)
    assert.deepEqual([settled.status, settled.json.state], [200, 'stopped'])
    const versioned = await call(api, 'GET', `${p}/wait?state=stopped&instance_id=${m.instanceId}&version=${m.instanceId}`)
    assert.equal(versioned.status, 200)
    assert.equal(versioned.json.version, m.instanceId)
  } finally {
    await api.close()
  }
})

test('the log, timelines and counters record every request and state change', async () => {
  const api = await startMachinesApi({apps: {web: {machines: 2}}, timings: FAST})
  try {
    const [m] = api.machines('web')
    const seen = []
    api.events.on('state', (e) => seen.push(`${e.machine}:${e.from}->${e.to}`))
    await call(api, 'GET', machinesPath())
    await call(api, 'POST', `${machinesPath()}/${m.id}/restart`)
    await call(api, 'GET', `${machinesPath()}/${m.id}/wait?state=started`)
    await call(api, 'GET', machinesPath(), {token: 'Bearer wrong'})
    assert.deepEqual(
      api.log.map((e) => [e.method, e.path, e.machine, e.action, e.status]),
      [
        ['GET', '/v1/apps/web/machines', null, 'list', 200],
        ['POST', `/v1/apps/web/machines/${m.id}/restart`, m.id, 'restart', 200],
        ['GET', `/v1/apps/web/machines/${m.id}/wait`, m.id, 'wait', 200],
        ['GET', '/v1/apps/web/machines', null, 'list', 401],
      ],
    )
    assert.equal(api.log[2].query, 'state=started')
    assert.ok(api.log.every((e) => typeof e.at === 'number' && e.ms >= 0 && /-lcl$/.test(e.id)))
    assert.equal(api.log[3].error, 'Authenticate: token validation error')
    assert.deepEqual(api.stats.calls, {list: 2, restart: 1, wait: 1})
    assert.deepEqual(api.stats.statuses, {200: 3, 401: 1})
    assert.deepEqual(seen, [`${m.id}:started->stopping`, `${m.id}:stopping->starting`, `${m.id}:starting->started`])
    const timelines = api.timelines('web')
    assert.deepEqual(Object.keys(timelines).sort(), api.machines('web').map((x) => x.id).sort())
    assert.deepEqual(timelines[m.id].map((e) => e.cause), ['init', 'restart', 'restart', 'restart'])
  } finally {
    await api.close()
  }
})

// ---------- the fleet and its proxy ----------

const FLEET_TIMINGS = {stopMs: [20, 40], startMs: [30, 60], checksCriticalMs: 50}

test('fleet: 24 Machines over ord/fra/nrt by default, each its own server, readable directly', async () => {
  const fleet = await startFleet({apiOptions: {timings: FLEET_TIMINGS}})
  try {
    const machines = fleet.machines()
    assert.equal(machines.length, 24)
    assert.deepEqual(Object.fromEntries(['ord', 'fra', 'nrt'].map((r) => [r, machines.filter((m) => m.region === r).length])), {ord: 8, fra: 8, nrt: 8})
    assert.equal(new Set(machines.map((m) => m.url)).size, 24)
    assert.ok(machines.every((m) => m.serving && m.boots === 1 && m.state === 'started'))
    const reads = await fleet.readAll('/probe')
    assert.deepEqual(reads.map((r) => r.json.machine), machines.map((m) => m.id))
    assert.ok(reads.every((r) => r.ok && r.json.path === '/probe'))
    const direct = await fleet.fetchFrom(machines[5].id, '/x')
    assert.equal((await direct.json()).machine, machines[5].id)
    assert.equal(fleet.api.machines('web').length, 24, 'the fleet’s Machines are the emulator’s')
  } finally {
    await fleet.close()
  }
})

test('proxy: fly-force-instance-id reaches exactly that Machine; unknown or stopped ones get 503, no fallback', async () => {
  const seen = []
  const fleet = await startFleet({
    machines: 6,
    apiOptions: {timings: FLEET_TIMINGS},
    latencyMs: {ord: 0, fra: 0, nrt: 0},
    handlerFor: (machine) => async (request) => {
      seen.push({machine: machine.id, region: request.headers.get('fly-region'), forced: request.headers.get('fly-force-instance-id')})
      return Response.json({machine: machine.env.FLY_MACHINE_ID, region: machine.env.FLY_REGION, body: request.method === 'POST' ? await request.json() : null})
    },
  })
  try {
    for (const m of fleet.machines()) {
      const r = await fetch(`${fleet.url}/internal/content-sync`, {method: 'POST', headers: {'fly-force-instance-id': m.id, ...JSON_TYPE}, body: JSON.stringify({n: 1})})
      assert.equal(r.status, 200)
      assert.deepEqual(await r.json(), {machine: m.id, region: m.region, body: {n: 1}})
      assert.match(r.headers.get('fly-request-id'), /-ord$/)
      assert.match(r.headers.get('via'), /fly\.io/)
    }
    assert.ok(seen.every((s) => s.forced === s.machine && s.region === 'ord'))

    const unknown = await fetch(fleet.url, {headers: {'fly-force-instance-id': 'ffffffffffffff'}})
    assert.equal(unknown.status, 503)
    assert.match((await unknown.json()).error, /ffffffffffffff/)

    const [stopped, ...rest] = fleet.machines()
    fleet.api.control.stop(stopped.id)
    await fleet.api.waitFor(stopped.id, 'stopped')
    assert.equal(fleet.machine(stopped.id).serving, false)
    const before = seen.length
    const refused = await fetch(fleet.url, {headers: {'fly-force-instance-id': stopped.id}})
    assert.equal(refused.status, 503)
    assert.match((await refused.json()).error, /is stopped/)
    assert.equal(seen.length, before, 'no other Machine answered in its place')
    await assert.rejects(fleet.fetchFrom(stopped.id, '/'), TypeError, 'the stopped Machine refuses direct connections too')

    // Without the header: some serving Machine, in the edge region first.
    const served = new Set()
    for (let i = 0; i < 6; i++) served.add((await (await fetch(`${fleet.url}/any`)).json()).machine)
    assert.ok(!served.has(stopped.id))
    assert.deepEqual([...served].sort(), rest.filter((m) => m.region === 'ord').map((m) => m.id).sort())
    assert.equal(fleet.log.filter((e) => e.forced === stopped.id && e.status === 503).length, 1)
  } finally {
    await fleet.close()
  }
})

test('proxy: each request pays its Machine’s region latency', async () => {
  const fleet = await startFleet({machines: 3, apiOptions: {timings: FLEET_TIMINGS}})
  try {
    const timed = async (id) => {
      const t = performance.now()
      const r = await fetch(fleet.url, {headers: {'fly-force-instance-id': id}})
      await r.arrayBuffer()
      return performance.now() - t
    }
    const byRegion = Object.fromEntries(fleet.machines().map((m) => [m.region, m.id]))
    for (const id of Object.values(byRegion)) await timed(id) // connections warm
    const ms = {}
    for (const [region, id] of Object.entries(byRegion)) ms[region] = Math.min(await timed(id), await timed(id))
    assert.deepEqual(fleet.latencyMs, {ord: 5, fra: 40, nrt: 80})
    assert.ok(ms.ord >= 5 && ms.fra >= 40 && ms.nrt >= 80, JSON.stringify(ms))
    assert.ok(ms.ord < ms.fra && ms.fra < ms.nrt, JSON.stringify(ms))
  } finally {
    await fleet.close()
  }
})

test('a restarted Machine runs onBoot in a fresh process before it serves again; checks wait for it', async () => {
  const order = []
  /** @type {Map<number, () => void>} */
  const gates = new Map()
  let gate2 = null
  const fleet = await startFleet({
    machines: 2,
    latencyMs: {ord: 0, fra: 0, nrt: 0},
    apiOptions: {timings: FLEET_TIMINGS},
    forceAttempts: 2,
    forceRetryDelayMs: 20,
    handlerFor: (machine) => {
      const memory = {content: null} // a new process: nothing in memory
      machine.memory = memory
      return () => {
        order.push(`serve:${machine.id}:boot${machine.boot}:${memory.content}`)
        return Response.json({machine: machine.id, boot: machine.boot, content: memory.content})
      }
    },
    onBoot: async (machine) => {
      order.push(`onBoot:${machine.id}:boot${machine.boot}`)
      if (machine.boot === 2) await new Promise((resolve) => (gate2 = resolve))
      machine.memory.content = `loaded-at-boot-${machine.boot}`
    },
  })
  try {
    const [m] = fleet.machines()
    const get = () => fetch(fleet.url, {headers: {'fly-force-instance-id': m.id}})
    assert.equal((await (await get()).json()).content, 'loaded-at-boot-1')

    const api = fleet.api
    const lease = await call(api, 'POST', `${machinesPath()}/${m.id}/lease`, {body: {ttl: 30}})
    assert.equal((await call(api, 'POST', `${machinesPath()}/${m.id}/restart`, {headers: {'fly-machine-lease-nonce': lease.json.data.nonce}})).status, 200)
    await api.waitFor(m.id, 'started')
    await pollFor(() => gate2, {what: 'onBoot of boot 2 runs'})
    // Started as far as the API knows, but the app is still booting: not served, checks critical.
    assert.equal(fleet.machine(m.id).serving, false)
    assert.equal(api.machine(m.id).checks, 'critical')
    const during = await get()
    assert.equal(during.status, 502, 'the proxy tried and could not reach it')
    await assert.rejects(fleet.fetchFrom(m.id, '/'), TypeError)

    gate2()
    await fleet.waitUp(m.id)
    const after = await (await get()).json()
    assert.deepEqual(after, {machine: m.id, boot: 2, content: 'loaded-at-boot-2'})
    assert.deepEqual(
      order.filter((o) => o.includes(m.id)),
      [`onBoot:${m.id}:boot1`, `serve:${m.id}:boot1:loaded-at-boot-1`, `onBoot:${m.id}:boot2`, `serve:${m.id}:boot2:loaded-at-boot-2`],
    )
    await api.until(m.id, (v) => v.checks === 'passing', {timeoutMs: 5_000})
    const states = api.timeline(m.id).map((e) => `${e.state}/${e.checks}`)
    assert.deepEqual(states.slice(-2), ['started/critical', 'started/passing'])

    const availability = fleet.availability(m.id)
    assert.equal(availability.boots, 2)
    assert.deepEqual(availability.events.map((e) => `${e.up ? 'up' : 'down'}:${e.cause}`), ['down:init', 'up:boot', 'down:state:stopping', 'up:boot'])
    assert.equal(availability.intervals.length, 2)
    assert.ok(availability.downMs > 0 && availability.upMs > 0)
    const other = fleet.availability()[fleet.machines()[1].id]
    assert.equal(other.intervals.length, 1, 'the other Machine stayed up')
  } finally {
    gate2?.()
    await fleet.close()
  }
})

test('fleet faults: app down (refused or 503) and an unreachable Machine (hangs or resets)', async () => {
  const fleet = await startFleet({machines: 3, latencyMs: {ord: 0, fra: 0, nrt: 0}, apiOptions: {timings: FLEET_TIMINGS}, upstreamTimeoutMs: 2_000})
  try {
    const [a, b] = fleet.machines()
    assert.equal((await fetch(fleet.url)).status, 200)

    await fleet.faults.appDown('refuse')
    await assert.rejects(fetch(fleet.url, {headers: {connection: 'close'}}), TypeError)
    await fleet.faults.appUp()
    assert.equal((await fetch(fleet.url)).status, 200, 'back on the same URL')
    await fleet.faults.appDown('503')
    const down = await fetch(fleet.url)
    assert.equal(down.status, 503)
    assert.match((await down.json()).error, /unavailable/)
    await fleet.faults.appUp()

    fleet.faults.unreachable(a.id)
    await assert.rejects(fetch(fleet.url, {headers: {'fly-force-instance-id': a.id}, signal: AbortSignal.timeout(200)}), {name: 'TimeoutError'})
    const reads = await fleet.readAll('/', {timeoutMs: 200})
    assert.deepEqual(reads.map((r) => r.ok), [false, true, true])
    assert.match(reads[0].error, /abort|timeout/i)
    assert.equal(fleet.availability(a.id).up, false)
    assert.equal(fleet.api.machine(a.id).hostStatus, 'ok', 'the API still vouches for it unless asked')

    fleet.faults.unreachable(b.id, {mode: 'reset', hostStatus: true})
    const reset = await fetch(fleet.url, {headers: {'fly-force-instance-id': b.id}})
    assert.equal(reset.status, 502)
    assert.equal(fleet.api.machine(b.id).hostStatus, 'unreachable')

    await fleet.faults.clear()
    for (const id of [a.id, b.id]) assert.equal((await (await fetch(fleet.url, {headers: {'fly-force-instance-id': id}})).json()).machine, id)
    assert.equal(fleet.api.machine(b.id).hostStatus, 'ok')
    assert.deepEqual(fleet.availability(a.id).events.map((e) => e.cause).slice(-2), ['unreachable', 'reachable'])
  } finally {
    await fleet.close()
  }
})

test('a fleet can share an emulator the caller started (and leaves it running)', async () => {
  const api = await startMachinesApi({apps: {web: {machines: 2, regions: ['fra']}}, timings: FLEET_TIMINGS})
  try {
    const fleet = await startFleet({api, app: 'web'})
    const fleet2 = await startFleet({api, app: 'docs', machines: 1, regions: ['nrt']})
    try {
      assert.deepEqual(fleet.machines().map((m) => m.region), ['fra', 'fra'])
      assert.deepEqual(api.apps(), ['web', 'docs'])
      assert.equal(fleet2.machines()[0].region, 'nrt')
    } finally {
      await fleet.close()
      await fleet2.close()
    }
    assert.equal((await call(api, 'GET', machinesPath())).status, 200, 'the emulator outlives the fleets')
  } finally {
    await api.close()
  }
})

test('a suspended Machine stops serving and resumes as it was: same process, same memory, no boot', async () => {
  let boots = 0
  const fleet = await startFleet({
    machines: 1,
    regions: ['ord'],
    latencyMs: {ord: 0},
    apiOptions: {timings: FLEET_TIMINGS},
    handlerFor: () => {
      boots += 1
      let hits = 0
      return () => Response.json({boot: boots, hits: ++hits})
    },
  })
  try {
    const [m] = fleet.api.machines('web')
    await fleet.waitUp(m.id)
    assert.equal((await (await fleet.fetchFrom(m.id, '/')).json()).hits, 1)
    fleet.api.control.setState(m.id, 'suspended')
    await pollFor(() => fleet.availability(m.id).up === false, {what: 'suspended Machine stops serving'})
    await assert.rejects(fleet.fetchFrom(m.id, '/'))
    fleet.api.control.start(m.id)
    await fleet.waitUp(m.id)
    const body = await (await fleet.fetchFrom(m.id, '/')).json()
    assert.deepEqual(body, {boot: 1, hits: 2}, 'resumed with its memory: no new boot, the counter went on')
    assert.equal(fleet.availability(m.id).events.at(-1).cause, 'resume')
  } finally {
    await fleet.close()
  }
})
