// A trap in the Function's wasm module never leaves it unusable for the rest of the process (issue 10: "a trap or
// panic never leaves the module unusable"). The trap is a real one of the built module: its linear memory is
// exhausted (grown from this test to wasm32's 4 GiB limit through the memory every wasm-bindgen module exports —
// no hook in the shipped module), so the core's next allocation aborts ("unreachable"), as a run that ran out of
// memory would. Before, that instance stayed in place and every later call in the process trapped too. Now the
// call that trapped fails with a `CoreFault` (class fatal, no secret in it), the loader (wasm.ts) replaces the
// instance, and the next handler call / webhook delivery reaches every started Machine of a loopback stand-in.
import {after, before, beforeEach, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {createServer} from 'node:http'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createWebhookHandler, handler} from '../../function.ts'
import {CoreFault, loadWasm, wasmGeneration} from '../../wasm.ts'
import {initSync} from '../../pkg/sanity_fly_sync.js'
import {APP, article, startFlyStandIn} from './support/fly-stand-in.mjs'
import {STARTED} from './support/assert-sync.mjs'
import {FLY_API_TOKEN, FLY_SYNC_SECRET, SANITY_WEBHOOK_SECRET, standInVars} from './support/run.mjs'

const WASM_PAGE = 64 * 1024
const MAX_PAGES = 65_536 // wasm32: 4 GiB

/**
 * Grow the live instance's memory until it can grow no more (the pages are reserved, not touched: RSS stays
 * flat). Its allocator can then get no more memory: the next allocation it cannot serve from what it holds traps.
 */
function exhaustModuleMemory() {
  loadWasm()
  const {memory} = initSync() // the glue's live instance (already initialised: no new one)
  for (const step of [4096, 256, 16, 1]) {
    for (let i = 0; i < MAX_PAGES && memory.buffer.byteLength / WASM_PAGE < MAX_PAGES; i++) {
      try {
        memory.grow(step)
      } catch {
        break
      }
    }
  }
  assert.ok(memory.buffer.byteLength / WASM_PAGE > MAX_PAGES - 16, `memory exhausted (${memory.buffer.byteLength / WASM_PAGE} pages)`)
}

/**
 * One push of revision `rev` to every started Machine, and none elsewhere; the bodies. (A run's Machine list may be
 * one an earlier run fetched: function.ts shares a recent list where the core allows it, so whether the stand-in
 * sees a list call of its own depends on timing and is not asserted.)
 */
function pushedToEveryStartedMachine(standIn, rev) {
  const syncs = standIn.syncs()
  assert.deepEqual(syncs.map((s) => s.headers['fly-force-instance-id']).sort(), [...STARTED].sort(), 'one push per started Machine')
  for (const s of syncs) assert.equal(s.body.rev, rev)
  return syncs.map((s) => s.body)
}

const secrets = [FLY_API_TOKEN, FLY_SYNC_SECRET, SANITY_WEBHOOK_SECRET]

function assertNoSecret(text, what) {
  for (const secret of secrets) assert.ok(!text.includes(secret), `${what} carries no secret`)
}

describe('a trap in the Function module', () => {
  let standIn
  before(async () => {
    standIn = await startFlyStandIn()
    for (const key of Object.keys(process.env)) if (key.startsWith('FLY_')) delete process.env[key]
    Object.assign(process.env, standInVars(standIn.url), {FLY_SYNC_ROUTES: 'article=/blog/{slug}'})
  })
  after(async () => {
    await standIn?.close()
  })
  beforeEach(() => standIn.reset())

  /** Run the handler as Sanity would; its JSON log lines are kept. */
  async function invoke(data, lines = []) {
    const original = console.log
    console.log = (line) => lines.push(String(line))
    try {
      return {report: await handler({context: {local: true}, event: {data}}), lines}
    } catch (error) {
      return {error, lines}
    } finally {
      console.log = original
    }
  }

  test('the Function run that traps fails as a fatal CoreFault; the next run in the process syncs', async () => {
    const warm = await invoke(article())
    assert.equal(warm.error, undefined, String(warm.error?.stack ?? warm.error))
    standIn.reset()

    exhaustModuleMemory()
    const generation = wasmGeneration()
    // 3 MiB of text (under the core's 4 MiB bound): copying it in needs more memory than the allocator holds.
    const trapped = await invoke(article({pad: 'x'.repeat(3 * 1024 * 1024)}))
    assert.ok(trapped.error instanceof CoreFault, `a CoreFault, got ${trapped.error?.stack ?? trapped.error}`)
    assert.equal(trapped.error.class, 'fatal')
    assert.equal(trapped.error.httpStatus, 500)
    assert.match(trapped.error.message, /^sanity-fly-sync: the sync core failed mid-call \(RuntimeError: unreachable\)/)
    assertNoSecret(trapped.error.message, 'the error')
    const logged = trapped.lines.map((l) => JSON.parse(l))
    assert.ok(logged.some((l) => l.action === 'fault' && l.class === 'fatal'), 'the fault is logged')
    assertNoSecret(trapped.lines.join('\n'), 'the log')
    assert.equal(wasmGeneration(), generation + 1, 'the instance was replaced')
    assert.deepEqual(standIn.requests, [], 'nothing sent by the run that trapped')

    const next = await invoke(article({_rev: 'rev-2'}))
    assert.equal(next.error, undefined, String(next.error?.stack ?? next.error))
    assert.equal(next.report.status, 'ok')
    const [push] = pushedToEveryStartedMachine(standIn, 'rev-2')
    assert.deepEqual(push.routes.current, ['/blog/hello'])
  })

  test('a webhook delivery whose run traps mid-way answers 500 (Sanity retries); the retry syncs', async () => {
    // In front of the stand-in: the first Machine list exhausts the module's memory before it is answered, and
    // the answer (the real list, padded with 16 MiB of JSON whitespace) must then be copied into the module.
    let exhaustOnce = true
    const front = createServer(async (req, res) => {
      const chunks = []
      for await (const chunk of req) chunks.push(chunk)
      const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k !== 'host' && k !== 'content-length'))
      const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
      const answer = await fetch(standIn.url + req.url, {method: req.method, headers, body: hasBody ? Buffer.concat(chunks) : undefined})
      let text = await answer.text()
      if (req.method === 'GET' && req.url === `/v1/apps/${APP}/machines` && exhaustOnce) {
        exhaustOnce = false
        exhaustModuleMemory()
        text += ' '.repeat(16 * 1024 * 1024)
      }
      res.writeHead(answer.status, {'content-type': answer.headers.get('content-type') ?? 'application/json'})
      res.end(text)
    })
    await new Promise((resolve) => front.listen(0, '127.0.0.1', resolve))
    const frontUrl = `http://127.0.0.1:${front.address().port}`
    try {
      const logs = []
      const webhook = createWebhookHandler({...standInVars(frontUrl), SANITY_WEBHOOK_SECRET, FLY_SYNC_ROUTES: 'article=/blog/{slug}'}, (line) => logs.push(line))
      const deliver = async (doc) => {
        const body = JSON.stringify(doc)
        const signature = await encodeSignatureHeader(body, Date.now(), SANITY_WEBHOOK_SECRET)
        const response = await webhook(new Request('http://127.0.0.1/', {method: 'POST', headers: {'sanity-webhook-signature': signature}, body}))
        return {status: response.status, json: await response.json()}
      }
      const generation = wasmGeneration()
      const trapped = await deliver(article({_rev: 'rev-3'}))
      assert.equal(trapped.status, 500, JSON.stringify(trapped.json))
      assert.equal(trapped.json.stage, 'fault')
      assert.match(trapped.json.error, /the sync core failed mid-call \(RuntimeError: unreachable\)/)
      assertNoSecret(JSON.stringify(trapped.json), 'the answer')
      assertNoSecret(JSON.stringify(logs), 'the log')
      assert.ok(logs.some((l) => l.action === 'fault'), 'the fault is logged')
      assert.equal(wasmGeneration(), generation + 1, 'the instance was replaced')
      assert.equal(exhaustOnce, false, 'the run trapped after its Machine list came back')
      assert.deepEqual(standIn.syncs(), [], 'no push from the run that trapped')

      standIn.reset()
      const retry = await deliver(article({_rev: 'rev-3'}))
      assert.equal(retry.status, 200, JSON.stringify(retry.json))
      assert.equal(retry.json.status, 'ok')
      pushedToEveryStartedMachine(standIn, 'rev-3')
    } finally {
      front.closeAllConnections()
      await new Promise((resolve) => front.close(resolve))
    }
  })
})
