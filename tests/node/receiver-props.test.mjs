// Property checks across the JavaScript ↔ wasm boundary of the receiver and its reconciliation, over the built
// module: random documents with deep nesting, integers beyond 2^53, special keys (`__proto__`, `constructor`,
// empty, non-ASCII), long strings and bytes that are not UTF-8. For every case: never a fault of the core, an
// answer of a known status, a document that reaches the hook exactly as written, and nothing recorded for a
// refused input. Seeded, so a failure names a case that reproduces.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {createHmac} from 'node:crypto'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createReceiver} from '../../receiver/index.ts'

const secret = '0123456789abcdef-properties'
const SEED = Number(process.env.PROPS_SEED ?? 20261127)

/** mulberry32: a small seeded generator. */
function rng(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const KEYS = ['__proto__', 'constructor', 'prototype', 'toString', '', 'title', 'ünïcødé', '🚀', 'a"b', 'line\nbreak', '_id']

/**
 * A random JSON value as [text, the value JavaScript must see], nested up to `depth` more levels.
 * Integers beyond 2^53 are expected as BigInt, every other number as the Number JSON.parse gives.
 */
function value(r, depth) {
  const pick = (n) => Math.floor(r() * n)
  const kind = depth > 0 ? pick(9) : pick(6)
  switch (kind) {
    case 0: {
      const big = BigInt(2 ** 53) + BigInt(pick(1e9)) * 10_007n
      const v = r() < 0.5 ? big : -big * 1_000_000_007n
      return [v.toString(), v]
    }
    case 1: {
      const v = pick(2 ** 31) - 2 ** 30
      return [String(v), v]
    }
    case 2: {
      const text = r() < 0.5 ? '0.1' : '1e-7'
      return [text, Number(text)]
    }
    case 3: {
      const long = r() < 0.1
      const s = long ? 'x'.repeat(100_000 + pick(100_000)) : KEYS[pick(KEYS.length)] + '\u2028\t\\'
      return [JSON.stringify(s), s]
    }
    case 4:
      return r() < 0.5 ? ['true', true] : ['null', null]
    case 5:
      return ['"9007199254740993"', '9007199254740993']
    case 6:
    case 7: {
      const keys = [...new Set(Array.from({length: pick(5)}, () => KEYS[pick(KEYS.length)]))]
      const object = {}
      const parts = []
      for (const key of keys) {
        const [t, v] = value(r, depth - 1)
        parts.push(`${JSON.stringify(key)}:${t}`)
        Object.defineProperty(object, key, {value: v, enumerable: true, writable: true, configurable: true})
      }
      return [`{${parts.join(',')}}`, object]
    }
    default: {
      const items = Array.from({length: pick(4)}, () => value(r, depth - 1))
      return [`[${items.map(([t]) => t).join(',')}]`, items.map(([, v]) => v)]
    }
  }
}

/** A document (an object) nested `extra` levels deeper than `value` would go on its own. */
function documentCase(r) {
  const [text, v] = value(r, 4)
  const deep = r() < 0.15 ? 120 + Math.floor(r() * 20) : 0
  const wrapped = '['.repeat(deep) + text + ']'.repeat(deep)
  let expected = v
  for (let i = 0; i < deep; i++) expected = [expected]
  const doc = {_id: 'd'}
  Object.defineProperty(doc, 'body', {value: expected, enumerable: true, writable: true, configurable: true})
  // The document sits 1 level inside the body, `body` 1 level inside it, then `deep` arrays, then `text`.
  return {text: `{"_id":"d","body":${wrapped}}`, expected: doc, depth: 2 + deep + depthOf(v)}
}

function depthOf(v) {
  if (v === null || typeof v !== 'object') return 0
  const children = Array.isArray(v) ? v : Object.keys(v).map((k) => Object.getOwnPropertyDescriptor(v, k).value)
  return 1 + Math.max(0, ...children.map(depthOf))
}

function pushBody(id, rev, documentText) {
  return `{"protocol":"sanity-fly-sync/1","op":"upsert","id":"${id}","type":"page","rev":"${rev}",` +
    `"updatedAt":"${new Date(Date.now() - 60_000).toISOString()}","routes":{"invalidate":[],"current":[],"previous":[]},` +
    `"tags":[],"document":${documentText},"idempotencyKey":"upsert:${id}:${rev}"}`
}

async function post(handler, text) {
  const signature = await encodeSignatureHeader(text, Date.now(), secret)
  const response = await handler(new Request('http://m/internal/content-sync', {method: 'POST', body: text, headers: {'sanity-fly-sync-signature': signature}}))
  return {status: response.status, json: await response.json()}
}

/** JSON nested this deep or deeper is refused: serde_json's recursion limit counts 128 containers entered. */
const REFUSED_DEPTH = 128

/** Count the core's faults: the receiver reports each on console.error. */
function faults(t) {
  const seen = []
  const original = console.error
  console.error = (...args) => seen.push(args.join(' '))
  t.after(() => (console.error = original))
  return seen
}

test('pushes: any document reaches the hook exactly or is refused whole, and the core never faults', async (t) => {
  const seenFaults = faults(t)
  const r = rng(SEED)
  const got = []
  const handler = createReceiver({secret, machineId: 'm', apply: (c) => void got.push(c.document)})
  let applied = 0
  let refused = 0
  for (let i = 0; i < 150; i++) {
    const c = documentCase(r)
    const id = `doc-${i}`
    const res = await post(handler, pushBody(id, 'r1', c.text))
    const label = `seed ${SEED}, case ${i} (depth ${c.depth})`
    if (c.depth >= REFUSED_DEPTH) {
      assert.equal(res.status, 400, label)
      assert.match(res.json.error, /nested at most 128 levels deep/, label)
      refused += 1
      // Nothing was recorded: the same id and revision, within bounds, applies.
      assert.equal((await post(handler, pushBody(id, 'r1', '{"_id":"d"}'))).json.status, 'applied', label)
      got.pop()
    } else {
      assert.equal(res.status, 200, `${label}: ${JSON.stringify(res.json)}`)
      assert.equal(res.json.status, 'applied', label)
      assert.deepStrictEqual(got.pop(), c.expected, label)
      applied += 1
    }
  }
  assert.ok(applied > 50 && refused > 5, `both sides of the bound were exercised (${applied} applied, ${refused} refused)`)
  assert.deepEqual(seenFaults, [])
})

test('pushes: bytes that are not UTF-8, anywhere, are refused as such and record nothing', async (t) => {
  const seenFaults = faults(t)
  const r = rng(SEED + 1)
  const handler = createReceiver({secret, machineId: 'm', apply() {}})
  const invalid = [[0xff], [0x80], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf5, 0x80, 0x80, 0x80], [0xe2, 0x82]]
  for (let i = 0; i < 40; i++) {
    const text = Buffer.from(pushBody(`bytes-${i}`, 'r1', '{"_id":"d","t":"abcdefgh"}'))
    const at = Math.floor(r() * text.length)
    const bytes = Buffer.concat([text.subarray(0, at), Buffer.from(invalid[Math.floor(r() * invalid.length)]), text.subarray(at)])
    // Signed over the raw bytes, as the Function signs (the header helper of @sanity/webhook takes a string).
    const t0 = Date.now()
    const mac = createHmac('sha256', secret).update(`${t0}.`).update(bytes).digest('base64url')
    const response = await handler(new Request('http://m/x', {method: 'POST', body: new Uint8Array(bytes), headers: {'sanity-fly-sync-signature': `t=${t0},v1=${mac}`}}))
    const json = await response.json()
    assert.equal(response.status, 400, `seed ${SEED + 1}, case ${i}: ${JSON.stringify(json)}`)
    assert.match(json.error, /`body`: expected UTF-8 JSON, got bytes that are not UTF-8/)
    assert.equal((await post(handler, pushBody(`bytes-${i}`, 'r1', '{"_id":"d"}'))).json.status, 'applied')
  }
  assert.deepEqual(seenFaults, [])
})

test('reconciliation pages: documents from a client reach the hook exactly; too deep is an error result', async (t) => {
  const seenFaults = faults(t)
  const r = rng(SEED + 2)
  const outcomes = {applied: 0, refused: 0}
  for (let i = 0; i < 40; i++) {
    const docs = Array.from({length: 1 + Math.floor(r() * 3)}, (_, j) => {
      const c = documentCase(r)
      const doc = {_id: `p-${i}-${j}`, _type: 'page', _rev: 'r1', _updatedAt: new Date(Date.now() - 60_000).toISOString()}
      Object.defineProperty(doc, 'body', {value: c.expected.body, enumerable: true, writable: true, configurable: true})
      return {doc, depth: c.depth}
    })
    const got = new Map()
    const receiver = createReceiver({
      secret, machineId: 'm', apply: (c) => void got.set(c.id, c.document),
      catchUp: {types: ['page'], intervalSeconds: 3600, client: {fetch: async (q) => (q.endsWith('._id') ? docs.map((d) => d.doc._id) : docs.map((d) => d.doc))}},
    })
    const run = await receiver.ready
    receiver.close()
    const label = `seed ${SEED + 2}, page ${i}`
    // The page is an array holding the documents: as deep as a push body holding them.
    if (Math.max(...docs.map((d) => d.depth)) >= REFUSED_DEPTH) {
      assert.match(run.error, /nested at most 128 levels deep|nested too deeply/, label)
      assert.equal(got.size, 0, `${label}: nothing of a refused page applied`)
      outcomes.refused += 1
    } else {
      assert.equal(run.error, undefined, `${label}: ${run.error}`)
      for (const {doc} of docs) assert.deepStrictEqual(got.get(doc._id), doc, label)
      outcomes.applied += 1
    }
  }
  assert.ok(outcomes.applied > 10 && outcomes.refused > 2, `both sides of the bound were exercised: ${JSON.stringify(outcomes)}`)
  assert.deepEqual(seenFaults, [])
})
