// Assertions on what a Fly received: one signed push per started Machine, nothing for the others — read from the
// loopback stand-in's request log, or from the local Fly's own records (the emulator's request log, the proxy's
// log and what each Machine's receiver saw and applied).
import assert from 'node:assert/strict'
import {isValidSignature} from '@sanity/webhook'
import {FLEET} from './fly-stand-in.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET} from './run.mjs'

export const STARTED = FLEET.filter((m) => m.state === 'started').map((m) => m.id)

/**
 * Every Machine of `started` (and nothing else) got exactly one push (`{machine, headers, raw, body}`), each
 * signed with FLY_SYNC_SECRET over its raw body (verified with @sanity/webhook, as a receiver would) and carrying
 * the body's idempotency key in its header; every Machine got the same bytes. Returns the parsed bodies.
 */
async function assertSignedPushes(syncs, started) {
  assert.deepEqual(syncs.map((s) => s.machine).sort(), [...started].sort(), 'pushed Machines')
  for (const s of syncs) {
    const signature = s.headers['sanity-fly-sync-signature']
    assert.match(signature, /^t=\d{13},v1=[A-Za-z0-9_-]{43}$/)
    assert.ok(await isValidSignature(s.raw, signature, FLY_SYNC_SECRET), 'signature verifies with @sanity/webhook')
    assert.equal(await isValidSignature(s.raw, signature, `${FLY_SYNC_SECRET}x`), false, 'and not with another secret')
    const age = Date.now() - Number(signature.slice(2, 15))
    assert.ok(age >= 0 && age < 60_000, `fresh signature timestamp (age ${age} ms)`)
    assert.equal(s.headers['content-type'], 'application/json')
    assert.equal(s.headers['idempotency-key'], s.body.idempotencyKey)
    assert.equal(s.body.protocol, 'sanity-fly-sync/1')
  }
  // Every Machine gets the same bytes.
  assert.equal(new Set(syncs.map((s) => s.raw)).size, 1, 'identical bodies')
  return syncs.map((s) => s.body)
}

/**
 * On the stand-in: the Machine list call (with the token) and the signed pushes above, each to the Machine its
 * `fly-force-instance-id` names. Returns the parsed bodies.
 */
export async function assertOnePushPerStartedMachine(standIn) {
  const lists = standIn.requests.filter((r) => r.method === 'GET' && r.url === '/v1/apps/my-fly-app/machines')
  assert.equal(lists.length, 1, 'one Machine list call')
  assert.equal(lists[0].headers.authorization, `FlyV1 ${FLY_API_TOKEN}`)
  return assertSignedPushes(standIn.syncs().map((s) => ({...s, machine: s.headers['fly-force-instance-id']})), STARTED)
}

/**
 * On the local Fly: `fly` has the emulator `api`, the `app`, and `since(mark)` → the records made since `mark`
 * (`{api, fleet, arrivals, applied}`: the emulator's and the proxy's log entries, what reached each Machine as
 * `{machine, headers, raw, body, ack}`, what its receiver applied as `{machine, id, rev}`). Checks that the emulator
 * answered one Machine list call and nothing else (it refuses a token not scoped to the app); the proxy forwarded
 * one push to each started Machine, routed by `fly-force-instance-id`, answered 200, and none to any other Machine;
 * each started Machine received the signed push above, acknowledged it as applied under its own id, and its
 * receiver applied the change once. Returns the parsed bodies.
 */
export async function assertOnePushPerStartedMachineOnLocalFly(fly, mark) {
  const {api, app} = fly
  const started = api.machines(app).filter((m) => m.state === 'started').map((m) => m.id)
  assert.ok(started.length < api.machines(app).length, 'the fleet has a Machine that is not started')
  const seen = fly.since(mark)
  assert.deepEqual(seen.api.map((c) => [c.action, c.app, c.status]), [['list', app, 200]], 'one Machine list call, answered')
  assert.deepEqual(seen.fleet.map((p) => p.forced).sort(), [...started].sort(), 'one push forced to each started Machine')
  for (const p of seen.fleet) {
    assert.equal(p.machine, p.forced, 'the proxy routed the push to the Machine it names')
    assert.equal(p.status, 200, `${p.forced}: ${p.error ?? ''}`)
  }
  for (const a of seen.arrivals) {
    assert.equal(a.headers['fly-force-instance-id'], a.machine)
    assert.deepEqual(a.ack, {protocol: 'sanity-fly-sync/1', machine: a.machine, status: 'applied', restart: null}, `${a.machine}'s receiver's answer`)
  }
  const bodies = await assertSignedPushes(seen.arrivals, started)
  const [body] = bodies
  assert.deepEqual(
    seen.applied.map((x) => [x.machine, x.id, x.rev]).sort(),
    started.map((m) => [m, body.id, body.rev]).sort(),
    'each started Machine\'s receiver applied the change once, the others nothing',
  )
  return bodies
}
