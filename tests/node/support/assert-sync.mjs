// Assertions on what the stand-in received: one signed push per started Machine, nothing for the others.
import assert from 'node:assert/strict'
import {isValidSignature} from '@sanity/webhook'
import {FLEET} from './fly-stand-in.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET} from './run.mjs'

export const STARTED = FLEET.filter((m) => m.state === 'started').map((m) => m.id)

/**
 * Checks the Machine list call and that every started Machine (and nothing else) got exactly one push, each
 * signed with FLY_SYNC_SECRET over its raw body (verified with @sanity/webhook, as a receiver would) and carrying
 * the body's idempotency key in its header. Returns the parsed bodies.
 */
export async function assertOnePushPerStartedMachine(standIn) {
  const lists = standIn.requests.filter((r) => r.method === 'GET' && r.url === '/v1/apps/my-fly-app/machines')
  assert.equal(lists.length, 1, 'one Machine list call')
  assert.equal(lists[0].headers.authorization, `FlyV1 ${FLY_API_TOKEN}`)

  const syncs = standIn.syncs()
  assert.deepEqual(syncs.map((s) => s.headers['fly-force-instance-id']).sort(), [...STARTED].sort(), 'pushed Machines')
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
