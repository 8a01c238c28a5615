// The webhook entry (createWebhookHandler) reads a delivery's body no further than the largest body the core
// accepts (src/event.rs MAX_INPUT_BYTES, 4 MiB, handed over by the module): a declared larger body is refused
// with 413 without reading a byte of it, and a streamed one (no content-length, or one that lies) is refused as
// soon as it passes the cap, its stream cancelled. Measured by counting the bytes pulled from the stream: a
// 200 MB body costs about the cap, never 200 MB. Before, `request.arrayBuffer()` read the whole body first.
import {describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {createWebhookHandler} from '../../function.ts'
import {webhookBodyLimit} from '../../wasm.ts'
import {APP} from './support/fly-stand-in.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET, SANITY_WEBHOOK_SECRET} from './support/run.mjs'

const CAP = 4 * 1024 * 1024
const CHUNK = 64 * 1024
const HUGE = 200 * 1024 * 1024

/** A body of `total` bytes (`{`-led JSON-ish filler), produced only as it is pulled; counts what was pulled. */
function countingStream(total) {
  const tally = {pulled: 0, cancelled: false}
  const stream = new ReadableStream(
    {
      pull(controller) {
        const size = Math.min(CHUNK, total - tally.pulled)
        if (size <= 0) return controller.close()
        tally.pulled += size
        controller.enqueue(new Uint8Array(size).fill(0x20))
      },
      cancel() {
        tally.cancelled = true
      },
    },
    {highWaterMark: 0},
  )
  return {stream, tally}
}

// Loopback addresses only: every delivery here is refused before a run could start, so nothing is ever sent.
const env = {FLY_APP_NAME: APP, FLY_API_TOKEN, FLY_SYNC_SECRET, SANITY_WEBHOOK_SECRET, FLY_API_URL: 'http://127.0.0.1:9', FLY_APP_URL: 'http://127.0.0.1:9'}

function post(body, headers = {}) {
  return new Request('http://127.0.0.1/', {method: 'POST', headers: {'content-type': 'application/json', ...headers}, body, duplex: 'half'})
}

async function answer(handler, request) {
  const response = await handler(request)
  return {status: response.status, json: await response.json()}
}

function assertTooLarge(result, logs) {
  assert.equal(result.status, 413, JSON.stringify(result.json))
  assert.equal(result.json.field, 'body')
  assert.equal(result.json.stage, 'input')
  assert.match(result.json.error, /^`body`: expected a webhook body of at most 4096 KiB, got \d+ bytes or more$/)
  assert.deepEqual(
    logs.map((l) => [l.action, l.field, l.httpStatus]),
    [['rejected', 'body', 413]],
    'one rejection logged, nothing sent',
  )
}

describe('webhook entry: the body cap', () => {
  test('the cap is the core\'s (4 MiB)', () => {
    assert.equal(webhookBodyLimit(), CAP)
  })

  test('a declared 200 MB body: 413 before a byte is read', async () => {
    const logs = []
    const handler = createWebhookHandler(env, (l) => logs.push(l))
    const {stream, tally} = countingStream(HUGE)
    const result = await answer(handler, post(stream, {'content-length': String(HUGE)}))
    assertTooLarge(result, logs)
    assert.equal(tally.pulled, 0, 'nothing read')
    assert.equal(tally.cancelled, true, 'the body stream was cancelled')
  })

  for (const [what, headers] of [
    ['no content-length', {}],
    ['a content-length that lies (100)', {'content-length': '100'}],
  ]) {
    test(`a streamed 200 MB body with ${what}: 413 once the cap is passed, about the cap read`, async () => {
      const logs = []
      const handler = createWebhookHandler(env, (l) => logs.push(l))
      const {stream, tally} = countingStream(HUGE)
      const result = await answer(handler, post(stream, headers))
      assertTooLarge(result, logs)
      assert.ok(tally.pulled > CAP, `read past the cap (${tally.pulled})`)
      assert.ok(tally.pulled <= CAP + 4 * CHUNK, `read stops right after the cap: ${tally.pulled} bytes pulled of ${HUGE}`)
      assert.equal(tally.cancelled, true, 'the rest of the stream was cancelled')
    })
  }

  test('a body of exactly the cap reaches the core (401: unsigned); one byte more is 413', async () => {
    const logs = []
    const handler = createWebhookHandler(env, (l) => logs.push(l))
    const atCap = await answer(handler, post(countingStream(CAP).stream))
    assert.equal(atCap.status, 401, JSON.stringify(atCap.json))
    assert.equal(atCap.json.field, 'sanity-webhook-signature')
    logs.length = 0
    const over = await answer(handler, post(countingStream(CAP + 1).stream))
    assertTooLarge(over, logs)
    assert.match(over.json.error, new RegExp(`got ${CAP + 1} bytes or more`))
  })
})
