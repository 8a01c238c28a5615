// What crosses from a Sanity Function event into the wasm core, through the real handler (function.ts) in this
// process, against a loopback stand-in for the Machines API and the app. The event crosses as JSON text and is
// bounded in Rust: a hostile event is a clear input rejection, never a trap, and the next event in the same
// process still syncs. Numbers cross exactly; a revision time in the future is refused before anything is sent.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {handler} from '../../function.ts'
import {APP, article, startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET} from './support/run.mjs'

/** Run the handler as Sanity would, with its JSON log lines kept out of the test output. */
async function invoke(data) {
  const original = console.log
  console.log = () => {}
  try {
    return {report: await handler({context: {local: true}, event: {data}})}
  } catch (error) {
    return {error}
  } finally {
    console.log = original
  }
}

/** An object nested `depth` levels deep, built without recursion. */
function nested(depth) {
  const root = {}
  let node = root
  for (let i = 0; i < depth; i++) node = node.a = {}
  return root
}

describe('Function event → wasm core', () => {
  let standIn
  before(async () => {
    standIn = await startFlyStandIn()
    for (const key of Object.keys(process.env)) if (key.startsWith('FLY_')) delete process.env[key]
    Object.assign(process.env, {
      FLY_APP_NAME: APP,
      FLY_API_TOKEN,
      FLY_SYNC_SECRET,
      FLY_API_URL: standIn.url,
      FLY_APP_URL: standIn.url,
      FLY_SYNC_ROUTES: 'article=/blog/{slug}',
    })
  })
  after(async () => {
    await standIn?.close()
  })
  beforeEach(() => standIn.reset())

  test('an event nested 10,000 deep is an input rejection naming `event`, and the next event syncs', async () => {
    // Before, the event crossed as a JS object tree and this trapped the module ("memory access out of
    // bounds"), failing every later call in the process. 3,000 levels reach the core as text (its bound is
    // 128); 10,000 are beyond what JSON.stringify can serialise, and the shim refuses them the same way.
    for (const depth of [3_000, 10_000, 129]) {
      const {error} = await invoke(article({body: nested(depth)}))
      assert.ok(error instanceof Error, `depth ${depth}: rejected`)
      assert.match(error.message, /^sanity-fly-sync: input error: `event`: expected .*nested at most 128 levels deep, got /)
      assert.deepEqual(standIn.requests, [], 'nothing sent')
    }
    const {report, error} = await invoke(article())
    assert.equal(error, undefined, String(error?.stack ?? error))
    assert.equal(report.status, 'ok')
    const [push] = await assertOnePushPerStartedMachine(standIn)
    assert.equal(push.id, 'article-9')
    assert.deepEqual(push.routes.current, ['/blog/hello'])
  })

  test('numbers cross exactly; `__proto__` is an ordinary key', async () => {
    // JSON.parse (as the Functions runtime parses the event) makes `__proto__` an own property.
    const extra = JSON.parse('{"views": 1152921504606846976, "ratio": 0.1, "low": -9007199254740993, "__proto__": {"polluted": true}}')
    const {error} = await invoke(article(extra))
    assert.equal(error, undefined, String(error?.stack ?? error))
    const [sync] = standIn.syncs()
    // 2^60 arrives as the integer JavaScript writes for it (not as 1.152921504606847e18, which a receiver
    // reading 64-bit integers refuses), and parses back to the same number.
    assert.match(sync.raw, /"views":1152921504606847000[,}]/)
    assert.equal(sync.body.document.views, 2 ** 60)
    assert.match(sync.raw, /"ratio":0\.1[,}]/)
    assert.match(sync.raw, /"low":-9007199254740992[,}]/, 'the double JavaScript parsed, exactly')
    assert.match(sync.raw, /"__proto__":\{"polluted":true\}/)
    assert.equal({}.polluted, undefined)
  })

  test('a revision time more than 120 s ahead is refused before anything is sent', async () => {
    const ahead = new Date(Date.now() + 3_600_000).toISOString()
    const {error} = await invoke(article({_updatedAt: ahead}))
    assert.match(error?.message ?? '', /input error: `event\.data\._updatedAt`: expected a revision time at most 120 s ahead/)
    assert.deepEqual(standIn.requests, [])
    const {error: soon} = await invoke(article({_updatedAt: new Date(Date.now() + 30_000).toISOString()}))
    assert.equal(soon, undefined, 'clock skew within the bound syncs')
  })

  test('an event over 4 MiB is refused with its size, not parsed', async () => {
    const {error} = await invoke(article({body: 'x'.repeat(5 * 1024 * 1024)}))
    assert.match(error?.message ?? '', /input error: `event`: expected at most 4096 KiB, got \d+ KiB/)
    assert.deepEqual(standIn.requests, [])
  })
})
