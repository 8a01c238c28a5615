// A receiver that cannot be wedged (issue: trust, "the receiver can be wedged"): requests are verified before
// they wait for anything, an app hook that never settles holds only its own document (and only until its
// timeout), bodies are capped before they are read whole, and memory comes back after a flood of large bodies.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {spawn} from 'node:child_process'
import {fileURLToPath} from 'node:url'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createReceiver} from '../../receiver/index.ts'

const secret = '0123456789abcdef-wedge'
const at = () => new Date(Date.now() - 60_000).toISOString()

function payload(id, rev = 'r1', updatedAt = at()) {
  return {
    protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'update', id, type: 'page', rev, updatedAt,
    slug: null, previousSlug: null, routes: {invalidate: [], current: [], previous: []}, tags: [id], locale: null, market: null,
    document: {_id: id, rev}, idempotencyKey: `upsert:${id}:${rev}`,
  }
}

async function request(handler, body, {sign = secret, headers = {}} = {}) {
  const raw = typeof body === 'string' ? body : JSON.stringify(body)
  const all = {'content-type': 'application/json', ...headers}
  if (sign) all['sanity-fly-sync-signature'] = await encodeSignatureHeader(raw, Date.now(), sign)
  const response = await handler(new Request('http://machine.internal/internal/content-sync', {method: 'POST', headers: all, body: raw}))
  return {status: response.status, json: await response.json()}
}

/** `promise`, or a failure naming `what` if it has not settled within `ms` (a bound on waiting, not a timing claim). */
async function answered(promise, what, ms = 5_000) {
  let timer
  const bound = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms)))
  try {
    return await Promise.race([promise, bound])
  } finally {
    clearTimeout(timer)
  }
}

/** A promise the test settles, and a way to see whether it was reached. */
function gate() {
  let open
  const opened = new Promise((resolve) => (open = resolve))
  let reached
  const arrived = new Promise((resolve) => (reached = resolve))
  return {opened, open, arrived, reached}
}

test('while an apply hook hangs: unsigned and forged requests are refused and other documents apply', async () => {
  const hung = gate()
  const applied = []
  const handler = createReceiver({
    secret, machineId: 'm',
    apply(change) {
      applied.push(change.id)
      if (change.id === 'stuck') {
        hung.reached()
        return hung.opened
      }
    },
  })
  let stuckDone = false
  const stuck = request(handler, payload('stuck')).then((r) => ((stuckDone = true), r))
  await answered(hung.arrived, 'the stuck hook to start')
  const unsigned = await answered(request(handler, payload('x'), {sign: null}), 'an unsigned request behind a hung apply')
  assert.equal(unsigned.status, 401)
  const forged = await answered(request(handler, payload('x'), {sign: 'another-secret-0000000'}), 'a forged request behind a hung apply')
  assert.equal(forged.status, 401)
  const other = await answered(request(handler, payload('other')), 'another document behind a hung apply')
  assert.equal(other.json.status, 'applied')
  assert.equal(stuckDone, false, 'all of that while the stuck hook had not settled')
  hung.open()
  assert.equal((await stuck).json.status, 'applied')
  assert.deepEqual(applied, ['stuck', 'other'])
})

test('a hook past its timeout: 503 (retryable), nothing committed, and a retry applies it once', async () => {
  let calls = 0
  const never = new Promise(() => {})
  const signals = []
  const handler = createReceiver({
    secret, machineId: 'm', hookTimeoutMs: 100,
    apply(change, {signal}) {
      calls += 1
      signals.push(signal)
      if (calls === 1) return never
    },
  })
  const first = await answered(request(handler, payload('p')), 'a hung hook past its timeout')
  assert.equal(first.status, 503)
  assert.equal(first.json.class, 'retryable')
  assert.match(first.json.error, /could not apply p: the apply hook did not settle within 100 ms/)
  assert.equal(signals[0].aborted, true, 'the hook was told to stop')
  // Retry as the Function does, until it lands: while the late hook may still run, the document is held for one
  // more timeout (503, the hook not called), then the retry applies it.
  let retry
  for (let attempt = 0; attempt < 50 && retry?.status !== 200; attempt++) retry = await request(handler, payload('p'))
  assert.equal(retry.status, 200, JSON.stringify(retry.json))
  assert.equal(retry.json.status, 'applied')
  assert.equal(calls, 2, 'the hung attempt, then exactly one retry')
  assert.equal((await request(handler, payload('p'))).json.status, 'duplicate', 'committed once')
  assert.equal(calls, 2)
})

test('a hook that settles after its timeout neither commits nor applies twice', async () => {
  const late = gate()
  let calls = 0
  const handler = createReceiver({
    secret, machineId: 'm', hookTimeoutMs: 100,
    apply() {
      calls += 1
      if (calls === 1) return late.opened
    },
  })
  const first = await request(handler, payload('p'))
  assert.equal(first.status, 503)
  late.open({restart: true})
  await late.opened
  // The late success was not committed: the retry applies (the hook's second call), and only once.
  let retry
  for (let attempt = 0; attempt < 50 && retry?.status !== 200; attempt++) retry = await request(handler, payload('p'))
  assert.equal(retry.json.status, 'applied')
  assert.equal(retry.json.restart, null, 'the late answer asked for a restart; nothing of it was used')
  assert.equal(calls, 2)
  assert.equal((await request(handler, payload('p'))).json.status, 'duplicate')
})

test('an invalidate hook past its timeout leaves the change uncommitted too', async () => {
  let invalidations = 0
  const handler = createReceiver({
    secret, machineId: 'm', hookTimeoutMs: 100,
    apply() {},
    invalidate: () => (invalidations += 1) === 1 ? new Promise(() => {}) : undefined,
  })
  const first = await request(handler, payload('p'))
  assert.equal(first.status, 503)
  assert.match(first.json.error, /the invalidate hook did not settle within 100 ms/)
  let retry
  for (let attempt = 0; attempt < 50 && retry?.status !== 200; attempt++) retry = await request(handler, payload('p'))
  assert.equal(retry.json.status, 'applied')
  assert.equal(invalidations, 2)
})

test('a syncTags hook past its timeout: 503 (retryable), not acked, later requests not wedged, and a retry applies it once', async () => {
  const never = new Promise(() => {})
  const calls = []
  const signals = []
  const handler = createReceiver({
    secret, machineId: 'm', hookTimeoutMs: 100,
    apply() {},
    syncTags(tags, {signal}) {
      calls.push(tags)
      signals.push(signal)
      if (calls.length === 1) return never
    },
  })
  const tags = (key, syncTags) => ({protocol: 'sanity-fly-sync/1', target: 'web', op: 'tags', syncTags, idempotencyKey: key})
  const first = await answered(request(handler, tags('tags:run-1', ['s1:aaaa'])), 'a hung syncTags hook past its timeout')
  assert.equal(first.status, 503)
  assert.equal(first.json.class, 'retryable')
  assert.equal(first.json.status, undefined, 'no ack: the Function does not count the tags as delivered')
  assert.match(first.json.error, /the syncTags hook did not settle within 100 ms/)
  assert.equal(signals[0].aborted, true, 'the hook was told to stop')
  // Nothing waits on the hung hook: an unsigned request, a document and other sync tags are answered.
  assert.equal((await answered(request(handler, tags('tags:run-2', ['s1:bbbb']), {sign: null}), 'an unsigned request')).status, 401)
  assert.equal((await answered(request(handler, payload('p')), 'a document push')).json.status, 'applied')
  assert.equal((await answered(request(handler, tags('tags:run-2', ['s1:bbbb'])), 'other sync tags')).json.status, 'applied')
  // The Function's retry of the first push: held while the late hook may still run, then applied, once.
  let retry
  for (let attempt = 0; attempt < 50 && retry?.status !== 200; attempt++) retry = await answered(request(handler, tags('tags:run-1', ['s1:aaaa'])), 'the retry')
  assert.equal(retry.status, 200, JSON.stringify(retry.json))
  assert.equal(retry.json.status, 'applied')
  assert.deepEqual(calls, [['s1:aaaa'], ['s1:bbbb'], ['s1:aaaa']], 'the hung call, the other tags, exactly one retry')
  assert.equal((await request(handler, tags('tags:run-1', ['s1:aaaa']))).json.status, 'duplicate', 'committed once')
  assert.equal(calls.length, 3)
})

test('changes of one document apply one at a time in arrival order; other documents do not wait', async () => {
  const first = gate()
  const events = []
  const handler = createReceiver({
    secret, machineId: 'm',
    async apply(change) {
      events.push(`start ${change.id}:${change.rev}`)
      if (change.rev === 'r1' && change.id === 'a') {
        first.reached()
        await first.opened
      }
      events.push(`end ${change.id}:${change.rev}`)
    },
  })
  const a1 = request(handler, payload('a', 'r1', '2026-11-27T10:00:00Z'))
  await answered(first.arrived, 'the first change of a')
  const a2 = request(handler, payload('a', 'r2', '2026-11-27T10:00:05Z'))
  const b = await answered(request(handler, payload('b')), 'a change of another document')
  assert.equal(b.json.status, 'applied')
  assert.deepEqual(events, ['start a:r1', 'start b:r1', 'end b:r1'], 'a:r2 waits for a:r1; b does not')
  first.open()
  assert.deepEqual([(await a1).json.status, (await a2).json.status], ['applied', 'applied'])
  assert.deepEqual(events.slice(3), ['end a:r1', 'start a:r2', 'end a:r2'])
})

test('a catch-up page applies as one unit against pushes of the same documents', async () => {
  const page = gate()
  const events = []
  const doc = (id, rev, time) => ({_id: id, _type: 'page', _rev: rev, _updatedAt: time})
  const handler = createReceiver({
    secret, machineId: 'm',
    async apply(change) {
      events.push(`${change.target}:${change.id}:${change.rev}`)
      if (change.target === 'catch-up' && change.id === 'x') {
        page.reached()
        await page.opened
      }
    },
    catchUp: {
      types: ['page'], intervalSeconds: 3600,
      client: {fetch: async (query) => (query.endsWith('._id') ? ['x', 'y', 'z'] : [doc('x', 'p1', '2026-11-27T09:00:00Z'), doc('y', 'p1', '2026-11-27T09:00:00Z')])},
    },
  })
  await answered(page.arrived, 'the page to start applying')
  // y is in the page: its push waits for the whole page; z is not: it applies now.
  const y = request(handler, payload('y', 'r2', '2026-11-27T10:00:00Z'))
  const z = await answered(request(handler, payload('z')), 'a push of a document outside the page')
  assert.equal(z.json.status, 'applied')
  assert.deepEqual(events, ['catch-up:x:p1', 'web:z:r1'])
  page.open()
  assert.equal((await y).json.status, 'applied')
  assert.deepEqual(events, ['catch-up:x:p1', 'web:z:r1', 'catch-up:y:p1', 'web:y:r2'])
  const run = await handler.ready
  assert.equal(run.applied, 2)
})

/** A body of `total` bytes in `chunk`-byte pieces, pulled only on demand; `pulled()` says how much was read. */
function streamed(total, chunk = 64 * 1024) {
  const piece = new Uint8Array(chunk).fill(0x20)
  let sent = 0
  const body = new ReadableStream({
    pull(controller) {
      if (sent >= total) return controller.close()
      sent += chunk
      controller.enqueue(piece)
    },
  }, {highWaterMark: 0})
  return {body, pulled: () => sent}
}

async function postStream(handler, body, headers) {
  const response = await handler(new Request('http://m/internal/content-sync', {method: 'POST', body, duplex: 'half', headers}))
  return {status: response.status, json: await response.json()}
}

test('bodies: unsigned ones are refused unread, oversized ones as soon as they are over the cap', async () => {
  const handler = createReceiver({secret, machineId: 'm', maxBodyBytes: 256 * 1024, apply() {}})
  const fresh = await encodeSignatureHeader('{}', Date.now(), secret) // a well-formed header whose MAC will not match
  const unsigned = streamed(200 * 1024 * 1024)
  const r1 = await postStream(handler, unsigned.body, {})
  assert.equal(r1.status, 401)
  assert.equal(unsigned.pulled(), 0, 'not a byte of an unsigned body was read')
  const declared = streamed(200 * 1024 * 1024)
  const r2 = await postStream(handler, declared.body, {'sanity-fly-sync-signature': fresh, 'content-length': String(200 * 1024 * 1024)})
  assert.equal(r2.status, 413)
  assert.match(r2.json.error, /`body`: expected a body of at most 262144 bytes/)
  assert.equal(declared.pulled(), 0, 'a declared length over the cap: refused unread')
  const undeclared = streamed(200 * 1024 * 1024)
  const r3 = await postStream(handler, undeclared.body, {'sanity-fly-sync-signature': fresh})
  assert.equal(r3.status, 413)
  assert.ok(undeclared.pulled() <= 256 * 1024 + 2 * 64 * 1024, `stopped reading just past the cap (read ${undeclared.pulled()} bytes)`)
  const forged = streamed(128 * 1024)
  assert.equal((await postStream(handler, forged.body, {'sanity-fly-sync-signature': fresh})).status, 401)
  // And a good push still applies.
  assert.equal((await request(handler, payload('p'))).json.status, 'applied')
})

test('memory comes back near its baseline after a flood of large bodies', async () => {
  // In a child process with --expose-gc: baseline, a flood of unsigned, oversized and forged bodies (several at
  // once, over 5 GB offered), then the same measures after garbage collection. glibc keeps freed heap memory for
  // reuse once its mmap threshold has adapted upwards, which RSS would count although nothing holds it; the child
  // pins both thresholds so that RSS shows what is actually held.
  const script = fileURLToPath(new URL('./support/receiver-flood.mjs', import.meta.url))
  const env = {...process.env, MALLOC_MMAP_THRESHOLD_: '65536', MALLOC_TRIM_THRESHOLD_: '65536'}
  const child = spawn(process.execPath, ['--expose-gc', script], {stdio: ['ignore', 'pipe', 'inherit'], env})
  let out = ''
  child.stdout.on('data', (chunk) => (out += chunk))
  const code = await answered(new Promise((resolve) => child.on('close', resolve)), 'the flood', 120_000)
  assert.equal(code, 0, out)
  const {baseline, after, peak, floodedBytes, statuses, lastPush} = JSON.parse(out.trim().split('\n').at(-1))
  const mb = (n) => `${Math.round(n / 1024 / 1024)} MB`
  assert.deepEqual(statuses, [401, 413])
  assert.equal(lastPush, 'applied', 'the receiver still applies a good push after the flood')
  assert.ok(floodedBytes >= 5e9, `the flood offered ${mb(floodedBytes)}`)
  assert.ok(after.wasm - baseline.wasm <= 1024 * 1024, `the core's memory grew from ${mb(baseline.wasm)} to ${mb(after.wasm)}: a body was taken in whole`)
  assert.ok(after.arrayBuffers - baseline.arrayBuffers < 1024 * 1024, `buffers still held: ${mb(after.arrayBuffers - baseline.arrayBuffers)}`)
  const grown = after.rss - baseline.rss
  assert.ok(grown < 48 * 1024 * 1024, `RSS grew by ${mb(grown)} (baseline ${mb(baseline.rss)}, peak ${mb(peak)}, after ${mb(after.rss)})`)
})
