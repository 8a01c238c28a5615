// Run by tests/node/receiver-wedge.test.mjs in a child process (node --expose-gc): the receiver under a flood of
// large bodies that must never be held whole — unsigned, over the size cap, forged — several at once. Prints one
// JSON line: RSS, the wasm module's memory and the buffers JavaScript holds, at baseline and after garbage
// collection, the RSS peak, and the bytes offered.
import {encodeSignatureHeader} from '@sanity/webhook'
import {createReceiver} from '../../../receiver/index.ts'
import {initSync} from '../../../pkg/sanity_fly_sync_receiver.js'

const secret = '0123456789abcdef-flood'
const MB = 1024 * 1024
const handler = createReceiver({secret, machineId: 'm', apply() {}})
let peak = 0
const sample = () => (peak = Math.max(peak, process.memoryUsage().rss))

/** After garbage collection: RSS, the wasm memory, and the buffers JavaScript holds. */
async function settle() {
  for (let i = 0; i < 4; i++) {
    globalThis.gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  const {rss, arrayBuffers} = process.memoryUsage()
  return {rss, wasm: initSync({module: new Uint8Array(0)}).memory.buffer.byteLength, arrayBuffers}
}

function push(id) {
  const raw = JSON.stringify({protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'update', id, type: 'page', rev: 'r1',
    updatedAt: new Date(Date.now() - 60_000).toISOString(), routes: {invalidate: [], current: [], previous: []}, tags: [],
    document: {_id: id}, idempotencyKey: `upsert:${id}:r1`})
  return encodeSignatureHeader(raw, Date.now(), secret).then((signature) =>
    handler(new Request('http://m/internal/content-sync', {method: 'POST', body: raw, headers: {'sanity-fly-sync-signature': signature}})))
}

/** `total` bytes offered in fresh 64 KB chunks, as a network read would hand them over, pulled on demand. */
function body(total) {
  let sent = 0
  return new ReadableStream({
    pull(controller) {
      if (sent >= total) return controller.close()
      sent += 64 * 1024
      controller.enqueue(new Uint8Array(64 * 1024).fill(0x7b))
    },
  }, {highWaterMark: 0})
}

let offered = 0
async function flood(total, headers) {
  offered += total
  const response = await handler(new Request('http://m/internal/content-sync', {method: 'POST', body: body(total), duplex: 'half', headers}))
  await response.text()
  sample()
  return response.status
}

for (let i = 0; i < 20; i++) await (await push(`warm-${i}`)).text()
const baseline = await settle()
const forged = {'sanity-fly-sync-signature': await encodeSignatureHeader('{}', Date.now(), secret)}
const statuses = new Set()
for (let round = 0; round < 4; round++) {
  const wave = [
    ...Array.from({length: 4}, () => flood(200 * MB, {})),
    ...Array.from({length: 2}, () => flood(200 * MB, forged)),
    ...Array.from({length: 2}, () => flood(30 * MB, forged)),
  ]
  for (const status of await Promise.all(wave)) statuses.add(status)
}
const after = await settle()
const last = await (await push('after-the-flood')).json()
console.log(JSON.stringify({baseline, peak, after, floodedBytes: offered, statuses: [...statuses].sort(), lastPush: last.status}))
