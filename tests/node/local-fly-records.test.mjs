// The local Fly's own records, which the fault matrix reads instead of the engine's report: the lease log
// (`api.leases()`: released, expired by TTL, still held), when each request ended (`endedAt`, also for one the
// client gave up on), the state log's global order (`seq`), and the checks built on them
// (tests/node/support/fly-records.mjs). Each check is shown to fire on a case made to break it.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {startMachinesApi, DEFAULT_TOKEN} from '../../local/fly/machines-api.mjs'
import {createManualClock} from '../../local/fly/clock.mjs'
import {leasesLeftBehind, mostDownAtOnce, requestsPastBudget, restartsSeen} from './support/fly-records.mjs'

const FAST = {stopMs: 100, startMs: 100, checksCriticalMs: 50}

async function call(api, method, path, {body, headers = {}, signal} = {}) {
  const init = {method, headers: {authorization: `Bearer ${DEFAULT_TOKEN}`, ...headers}, signal}
  if (body !== undefined) {
    init.body = JSON.stringify(body)
    init.headers['content-type'] = 'application/json'
  }
  const r = await fetch(`${api.url}${path}`, init)
  return {status: r.status, json: await r.json().catch(() => undefined)}
}

test('api.leases(): every lease with how it ended — released, expired by its TTL on the clock, or held', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 3}}, clock, timings: FAST})
  try {
    const [a, b, c] = api.machines('web').map((m) => m.id)
    const lease = (id, ttl, headers) => call(api, 'POST', `/v1/apps/web/machines/${id}/lease`, {body: {description: 'test', ttl}, headers})
    const onA = await lease(a, 30)
    assert.equal(onA.status, 201)
    clock.advance(1_000)
    assert.equal((await lease(a, 60, {'fly-machine-lease-nonce': onA.json.data.nonce})).status, 201, 'refresh')
    assert.equal((await lease(b, 5)).status, 201)
    const theirs = api.faults.leaseHeldElsewhere(c, {ttlS: 600})
    assert.equal('record' in theirs, false, 'the fault hands back the lease, not its record')

    let records = api.leases('web')
    assert.deepEqual(records.map((r) => [r.machine, r.source, r.end, r.refreshes]), [[a, 'api', 'held', 1], [b, 'api', 'held', 0], [c, 'fault', 'held', 0]])
    assert.equal(records[0].expiresAt, clock.now() + 60_000, 'a refresh moves the expiry')
    assert.equal(records[0].acquiredAt, clock.now() - 1_000)
    // Left behind while held.
    assert.deepEqual(leasesLeftBehind(records).leftBehind.map((l) => [l.machine, l.end]), [[a, 'held'], [b, 'held']])

    const released = await call(api, 'DELETE', `/v1/apps/web/machines/${a}/lease`, {headers: {'fly-machine-lease-nonce': onA.json.data.nonce}})
    assert.equal(released.status, 200)
    clock.advance(5_000) // b's TTL runs out; nobody released it
    records = api.leases('web')
    assert.deepEqual(records.map((r) => [r.machine, r.end]), [[a, 'released'], [b, 'expired'], [c, 'held']])
    assert.equal(records[0].releasedAt, clock.now() - 5_000)
    assert.equal(records[1].releasedAt, null)
    // An expired lease is still one left behind: the run did not release it.
    assert.deepEqual(leasesLeftBehind(records), {taken: 2, leftBehind: [{machine: b, end: 'expired', acquiredAt: records[1].acquiredAt, expiresAt: records[1].expiresAt}]})

    // Copies: what a test holds does not change the log.
    records[2].end = 'released'
    records[2].releasedAt = 1
    assert.equal(api.leases('web')[2].end, 'held')
    assert.deepEqual(api.leases('other'), [])
    // The Machine snapshot agrees (TTL applied): a's released, b's expired, c's held.
    assert.deepEqual([a, b, c].map((id) => api.machine(id).lease?.owner ?? null), [null, null, theirs.owner])
  } finally {
    await api.close()
  }
})

test('api.log endedAt: when the answer was written, or when a client gave up on a request that never got one', async () => {
  const api = await startMachinesApi({apps: {web: {machines: 1}}})
  try {
    assert.equal((await call(api, 'GET', '/v1/apps/web/machines')).status, 200)
    api.faults.inject({action: 'list', hang: true, label: 'fault:hang'})
    const abort = new AbortController()
    const hung = call(api, 'GET', '/v1/apps/web/machines', {signal: abort.signal})
    // Wait (bounded) until the emulator has the request, then give up on it as a client's timeout would.
    for (let i = 0; i < 200 && api.log.length < 2; i++) await new Promise((r) => setImmediate(r))
    assert.equal(api.log.length, 2)
    assert.equal(api.log[1].endedAt, null, 'open while the client waits')
    abort.abort()
    await assert.rejects(hung)
    for (let i = 0; i < 200 && api.log[1].endedAt === null; i++) await new Promise((r) => setImmediate(r))
    const [answered, abandoned] = api.log
    assert.equal(answered.endedAt, answered.at + answered.ms)
    assert.equal(abandoned.status, null, 'never answered')
    assert.ok(abandoned.endedAt >= abandoned.at, JSON.stringify(abandoned))
  } finally {
    await api.close()
  }
})

test('requestsPastBudget: late arrivals, requests after the run ended, requests open past the deadline, and orphans', () => {
  const runs = [{label: 'r1', startedAtMs: 1_000, endedAtMs: 2_000, deadlineMs: 6_000}]
  const log = [
    {action: 'list', machine: null, at: 1_010, endedAt: 1_020}, // fine
    {action: 'release', machine: 'm', at: 1_900, endedAt: 2_100}, // ended after the run but inside the budget: fine
    {action: 'restart', machine: 'm', at: 2_000 + 251, endedAt: 2_300}, // after the run reported done
    {action: 'wait', machine: 'm', at: 1_500, endedAt: 6_000 + 251}, // open past the deadline
    {action: 'get', machine: 'm', at: 1_500, endedAt: null}, // never closed
    {action: 'list', machine: null, at: 900, endedAt: 950}, // before any run
  ]
  const {checked, late} = requestsPastBudget(log, runs)
  assert.equal(checked, 5)
  assert.deepEqual(late.map((l) => [l.action, l.why.replace(/\d+ ms/, 'N ms')]), [
    ['restart', 'arrived N ms after the run reported done'],
    ['wait', "open until N ms after the run's budget ended"],
    ['get', 'still open when the simulation ended'],
    ['list', 'sent before any run started'],
  ])
  const past = requestsPastBudget([{action: 'lease', machine: 'm', at: 6_300, endedAt: 6_301}], [{...runs[0], endedAtMs: 7_000}])
  assert.match(past.late[0].why, /after the run's budget ended/)
})

test('mostDownAtOnce and restartsSeen read the state log in its own order, also within one millisecond', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 3}}, clock, timings: FAST})
  try {
    const [a, b, c] = api.machines('web').map((m) => m.id)
    const from = clock.now()
    api.control.restart(a)
    api.control.restart(b) // the same millisecond: both down at once
    clock.advance(1_000)
    api.control.stop(c)
    clock.advance(1_000)
    const log = api.stateLog
    assert.deepEqual(log.map((e) => e.seq), log.map((_, i) => i), 'seq is the position in the one log')
    const timelines = api.timelines('web')
    const peak = mostDownAtOnce(timelines, {from})
    assert.equal(peak.most, 2)
    assert.deepEqual(peak.machines.sort(), [a, b].sort())
    assert.equal(peak.at, from)
    // c is still down at the end; counted from before the window when the window starts later.
    assert.deepEqual(mostDownAtOnce(timelines, {from: clock.now()}), {most: 1, at: clock.now(), machines: [c]})
    // Restarts counted from the timeline (control restarts are not API restarts: cause `control`).
    const seen = restartsSeen(timelines, {from, to: clock.now()})
    assert.deepEqual(seen[a], {restarts: 0, upAtEnd: true})
    assert.deepEqual(seen[c], {restarts: 0, upAtEnd: false})
  } finally {
    await api.close()
  }
})

test('restartsSeen counts restarts sent through the API, once each, and who came back', async () => {
  const clock = createManualClock()
  const api = await startMachinesApi({apps: {web: {machines: 2}}, clock, timings: FAST})
  try {
    const [a, b] = api.machines('web').map((m) => m.id)
    const from = clock.now()
    api.faults.stuck(b)
    for (const id of [a, b]) assert.equal((await call(api, 'POST', `/v1/apps/web/machines/${id}/restart`)).status, 200)
    clock.advance(1_000)
    assert.deepEqual(restartsSeen(api.timelines('web'), {from, to: clock.now()}), {[a]: {restarts: 1, upAtEnd: true}, [b]: {restarts: 1, upAtEnd: false}})
  } finally {
    await api.close()
  }
})
