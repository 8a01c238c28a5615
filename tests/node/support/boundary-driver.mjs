// One fuzz run over the BUILT artifacts, in a process of its own (boundary-fuzz.test.mjs starts one per entry and
// family, so a trap that leaves the wasm module unusable, or a crash, is pinned to the family that caused it):
//
//   node boundary-driver.mjs <entry> <family> <seed> <randomCases>
//
// entry: function (dist/functions/fly-sync `handler`), webhook (`createWebhookHandler`), receiver
// (dist/receiver `createReceiver`, pushes) or reconciliation (the same receiver's catch-up through a stub
// `catchUp.client`). Each case throws one hostile input at the entry, checks the properties, then makes one good
// call in the same process. Lines on stdout starting with `@@` are JSON: `{start}`, `{case, outcome,
// violations}`, `{stopped}` and `{done}`; everything else (the Function's own log lines) is captured, not printed.
// BOUNDARY_FUZZ_ROOT points it at the built artifacts of another checkout (say, a scratch copy of a commit).
import {startFlyStandIn} from './fly-stand-in.mjs'
import {SANITY_WEBHOOK_SECRET, ROOT, standInVars} from './run.mjs'
import {
  BAD_UTF8, BIG_INTEGERS, DEPTHS, HUGE_STRINGS, LONE_SURROGATES, SPECIAL_KEYS, cyclicValues, deepArray, deepJson, deepObject, exactInteger,
  oddValues, prng, prototypeKeys, signBytes, specialKeyFields, throwingValues, withBytes, withOwnKeys,
} from './hostile.mjs'
import {isValidSignature} from '@sanity/webhook'

const [entryName, family, seedArg, randomArg] = process.argv.slice(2)
const seed = Number(seedArg ?? 1)
const randomCases = Number(randomArg ?? 10)
const ARTIFACTS = process.env.BOUNDARY_FUZZ_ROOT ?? ROOT
const CALL_BOUND_MS = 20_000
const RECEIVER_SECRET = '0123456789abcdef-boundary-fuzz'

const emit = (value) => process.stdout.write(`@@${JSON.stringify(value)}\n`)
const captured = []
console.log = (...args) => void captured.push(args.map(String).join(' ').slice(0, 2000))
console.error = (...args) => void captured.push(args.map(String).join(' ').slice(0, 2000))
console.warn = console.error

// ---------- outcomes ----------

function safeString(value) {
  try {
    return String(value)
  } catch {
    return Object.prototype.toString.call(value)
  }
}

/** What was thrown, described without trusting it. */
function describeThrown(e) {
  const isError = e instanceof Error
  const message = isError ? safeString(e.message) : safeString(e)
  return {
    isError,
    type: e === null ? 'null' : typeof e === 'object' ? (Object.getPrototypeOf(e)?.constructor?.name ?? 'Object') : typeof e,
    message: message.slice(0, 400),
    trap: e instanceof WebAssembly.RuntimeError || /memory access out of bounds|unreachable|RuntimeError|recursive use of an object|null pointer passed to rust/i.test(message),
  }
}

/** Run `fn` to completion, bounded: `{kind: 'resolved', value} | {kind: 'threw', thrown} | {kind: 'hung'}`. */
async function settle(fn, ms = CALL_BOUND_MS) {
  let timer
  const bound = new Promise((resolve) => (timer = setTimeout(() => resolve({kind: 'hung'}), ms)))
  const call = (async () => {
    try {
      return {kind: 'resolved', value: await fn()}
    } catch (e) {
      return {kind: 'threw', thrown: describeThrown(e), raw: e}
    }
  })()
  const outcome = await Promise.race([call, bound])
  clearTimeout(timer)
  return outcome
}

/** A short description of what an entry answered (an HTTP answer's body, a report's status, a run result). */
function describeValue(value) {
  if (value && typeof value.text === 'string') return value.text.slice(0, 300)
  if (value && typeof value === 'object' && 'ok' in value && 'targets' in value) return `report ${value.status}`
  try {
    return JSON.stringify(value)?.slice(0, 300)
  } catch {
    return safeString(value)
  }
}

const v = (property, detail) => ({property, detail: String(detail).slice(0, 600)})

// ---------- shared fixtures ----------

let counter = 0
const fresh = (prefix) => `${prefix}-${++counter}`
/** Revision times in the past, newer with each call (so a later good change is never "stale"). */
const BASE_MS = Date.now() - 6 * 3600_000
const nextTime = () => new Date(BASE_MS + ++counter * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z')
const iso = (ms) => new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z')
/**
 * Revision times ahead of the clock: past the small skew bound every entry allows (refuse: one such input would
 * make every later real edit "stale"), and within it (accept: clocks differ a little).
 */
const FUTURE = () => [
  ['in 2099', '2099-01-01T00:00:00Z', 'refuse'],
  ['a day ahead', iso(Date.now() + 86_400_000), 'refuse'],
  ['10 minutes ahead', iso(Date.now() + 600_000), 'refuse'],
  ['30 seconds ahead', iso(Date.now() + 30_000), 'accept'],
]
const MAX_SKEW_MS = 120_000

/** Properties shared by every case: no prototype pollution, the call settled, anything thrown is an Error. */
const PROTOTYPE_KEYS = prototypeKeys()
function common(outcome) {
  const out = []
  if (prototypeKeys() !== PROTOTYPE_KEYS) out.push(v('no-pollution', `Object.prototype changed: ${prototypeKeys()}`))
  if (outcome.kind === 'hung') out.push(v('settles', `did not settle within ${CALL_BOUND_MS} ms`))
  if (outcome.kind === 'threw' && !outcome.thrown.isError) out.push(v('throws-errors', `threw a ${outcome.thrown.type}, not an Error: ${outcome.thrown.message}`))
  if (outcome.kind === 'threw' && outcome.thrown.trap) out.push(v('no-trap', `the wasm boundary broke (a trap, or a borrow left held): ${outcome.thrown.message}`))
  return out
}

/** Deep structural equality that treats `__proto__` and friends as the own keys they must be. */
function sameJson(a, b, path = '$', depth = 0) {
  if (depth > 200) return null
  if (typeof a !== typeof b) return `${path}: ${typeof a} ≠ ${typeof b}`
  if (a === null || b === null || typeof a !== 'object') {
    if (typeof a === 'number' && typeof b === 'number' && Object.is(a, b)) return null
    return a === b ? null : `${path}: ${safeString(a).slice(0, 60)} ≠ ${safeString(b).slice(0, 60)}`
  }
  if (Array.isArray(a) !== Array.isArray(b)) return `${path}: array vs object`
  if (!Array.isArray(a) && Object.getPrototypeOf(a) !== Object.prototype) return `${path}: prototype is not Object.prototype`
  const ka = Object.keys(a)
  const kb = Object.keys(b)
  for (const k of kb) if (!Object.hasOwn(a, k)) return `${path}: own key ${JSON.stringify(k)} missing`
  for (const k of ka) if (!Object.hasOwn(b, k)) return `${path}: unexpected own key ${JSON.stringify(k)}`
  for (const k of kb) {
    const d = sameJson(a[k], b[k], `${path}.${k}`, depth + 1)
    if (d) return d
  }
  return null
}

/** Numbers (or BigInts) at `doc[key]` against the exact integer `text`. */
function exactCheck(value, text, where) {
  const got = exactInteger(value)
  if (got === null) return `${where}: ${typeof value} ${safeString(value).slice(0, 40)} is not an exact integer (expected ${text})`
  return got === BigInt(text) ? null : `${where}: ${got} ≠ ${text} (changed silently)`
}

/** A case: `name`, `input` (entry-specific), and what must hold when it is accepted. */
const mk = (name, input, expect = {}) => ({name: `${family}: ${name}`, input, expect})

// ---------- the Function ----------

async function functionEntry() {
  const standIn = await startFlyStandIn()
  Object.assign(process.env, {
    ...standInVars(standIn.url),
    FLY_SYNC_ROUTES: 'article=/blog/{slug}',
    FLY_SYNC_BUDGET_MS: '3000',
    FLY_SYNC_REQUEST_TIMEOUT_MS: '1000',
  })
  const {handler} = await import(`${ARTIFACTS}/dist/functions/fly-sync/index.js`)
  const doc = (fields = {}) => ({_id: fresh('article'), _type: 'article', _rev: fresh('rev'), _updatedAt: nextTime(), title: 'T', slug: 'hello', op: 'update', previousSlug: null, ...fields})
  const docWith = (entries) => withOwnKeys([...Object.entries(doc()), ...entries])
  const pushedDocument = (id) => {
    const s = standIn.syncs().find((x) => x.body.id === id)
    return s ? s.body.document : undefined
  }

  const cases = []
  const ev = (data) => ({data})
  if (family === 'control') {
    cases.push(mk('an ordinary document', ev(doc({body: [{_type: 'block', children: [{text: 'hi'}]}]})), {accept: true}))
    cases.push(mk('small numbers', ev(doc({n: 42, f: 1.5, neg: -7})), {accept: true, pushed: (d) => sameJson(d?.n, 42, '$.n')}))
    cases.push(mk('nested 20 deep', ev(doc({deep: deepObject(20)})), {accept: true, pushed: (d) => sameJson(d?.deep, deepObject(20), '$.deep')}))
    cases.push(mk('a non-ASCII title', ev(doc({title: 'Grüße, 世界 😀'})), {accept: true, pushed: (d) => sameJson(d?.title, 'Grüße, 世界 😀', '$.title')}))
  }
  if (family === 'deep') {
    for (const depth of DEPTHS) {
      cases.push(mk(`document field ${depth} objects deep`, ev(doc({deep: deepObject(depth)}))))
      cases.push(mk(`document field ${depth} arrays deep`, ev(doc({deep: deepArray(depth)}))))
      cases.push(mk(`event.data ${depth} deep`, ev(deepObject(depth))))
      cases.push(mk(`event ${depth} deep`, deepObject(depth, {}, 'data')))
      cases.push(mk(`slug ${depth} deep`, ev(doc({slug: deepObject(depth, 'x', 'current')}))))
    }
  }
  if (family === 'numbers') {
    for (const text of BIG_INTEGERS) {
      const n = Number(text)
      cases.push(mk(`document number ${text}`, ev(doc({n, nested: {list: [n]}})), {accept: true, pushed: (d) => sameJson(d?.n, n, '$.n') ?? sameJson(d?.nested, {list: [n]}, '$.nested')}))
      cases.push(mk(`document BigInt ${text}`, ev(doc({n: BigInt(text)})), {pushed: (d) => exactCheck(d?.n, text, '$.n')}))
      cases.push(mk(`_rev as the number ${text}`, ev(doc({_rev: n}))))
      cases.push(mk(`_updatedAt as the number ${text}`, ev(doc({_updatedAt: n}))))
    }
    cases.push(mk('document number 1e308', ev(doc({n: 1e308})), {accept: true, pushed: (d) => sameJson(d?.n, 1e308, '$.n')}))
  }
  if (family === 'keys') {
    const fields = specialKeyFields()
    cases.push(mk('document with every special key', ev(docWith(fields)), {accept: true, pushed: (d) => keysIntact(d, fields)}))
    cases.push(mk('special keys nested', ev(doc({meta: withOwnKeys(fields)})), {accept: true, pushed: (d) => sameJson(d?.meta, withOwnKeys(fields), '$.meta')}))
    cases.push(mk('JSON.parse\'d document with __proto__', ev(JSON.parse(JSON.stringify(doc()).replace(/^\{/, '{"__proto__":{"polluted":true},'))), {accept: true, pushed: (d) => (d && Object.hasOwn(d, '__proto__') ? sameJson(d.__proto__, {polluted: true}, '$.__proto__') : 'the pushed document lost its own __proto__ key')}))
    cases.push(mk('event.data with an own __proto__ holding the fields', ev(withOwnKeys([['__proto__', doc()]]))))
    cases.push(mk('event with an own __proto__ holding data', withOwnKeys([['__proto__', ev(doc())]])))
    for (const key of SPECIAL_KEYS) cases.push(mk(`_id ${JSON.stringify(key)}`, ev(doc({_id: key}))))
    cases.push(mk('_type "constructor"', ev(doc({_type: 'constructor'}))))
  }
  if (family === 'strings') {
    for (const [name, make] of HUGE_STRINGS) {
      const s = make()
      cases.push(mk(`title: ${name}`, ev(doc({title: s})), {pushed: (d) => (d?.title === s ? null : 'the pushed title differs')}))
      cases.push(mk(`_id: ${name}`, ev(doc({_id: s}))))
      cases.push(mk(`slug: ${name}`, ev(doc({slug: s}))))
    }
    for (const [name, s] of LONE_SURROGATES) {
      cases.push(mk(`title: ${name}`, ev(doc({title: s})), {pushed: (d) => (d?.title === s || d?.title === s.toWellFormed() ? null : `the pushed title is ${JSON.stringify(d?.title)}`)}))
      cases.push(mk(`_id: ${name}`, ev(doc({_id: `article-${s}`}))))
      cases.push(mk(`key: ${name}`, ev(docWith([[s, 1]]))))
    }
    cases.push(mk('bytes as a Buffer field', ev(doc({bytes: Buffer.from(BAD_UTF8[0][1])}))))
    cases.push(mk('_id of characters beyond Latin-1', ev(doc({_id: `文章-${counter}`}))))
  }
  if (family === 'cyclic' || family === 'throwing') {
    for (const [name, value] of family === 'cyclic' ? cyclicValues() : throwingValues()) {
      cases.push(mk(`event.data = ${name}`, ev(value)))
      cases.push(mk(`document field = ${name}`, ev(doc({odd: value}))))
    }
  }
  if (family === 'odd') {
    for (const [name, value] of oddValues()) {
      cases.push(mk(`event = ${name}`, value))
      cases.push(mk(`event.data = ${name}`, ev(value)))
      cases.push(mk(`document field = ${name}`, ev(doc({odd: value}))))
      cases.push(mk(`_id = ${name}`, ev(doc({_id: value}))))
    }
  }
  if (family === 'future') {
    for (const [name, at, want] of FUTURE()) cases.push(mk(`_updatedAt ${name}`, ev(doc({_updatedAt: at})), want === 'refuse' ? {refuse: true} : {accept: true}))
  }
  if (family === 'random') for (let i = 0; i < randomCases; i++) cases.push(mk(`random #${i}`, ev(randomDocument(prng(seed * 1000 + i), doc()))))

  return {
    cases,
    async call(input) {
      standIn.reset()
      return handler({context: {local: true}, event: input})
    },
    check(c, outcome) {
      const out = []
      if (outcome.kind === 'threw') {
        const {message} = outcome.thrown
        if (!/^sanity-fly-sync: input error: /.test(message)) out.push(v('clear-rejection', `not a clear input error: ${message}`))
        const rejected = captured.map(parseLine).filter((l) => l?.action === 'rejected').at(-1)
        if (!rejected || rejected.stage !== 'input' || typeof rejected.message !== 'string') out.push(v('clear-rejection', `the log's rejection is not stage input: ${JSON.stringify(rejected)?.slice(0, 200)}`))
        if (c.expect.accept) out.push(v('accepted', `a valid document was refused: ${message}`))
        if (standIn.requests.length) out.push(v('nothing-sent', `${standIn.requests.length} requests sent for a refused event`))
      } else if (outcome.kind === 'resolved') {
        const report = outcome.value
        if (c.expect.refuse) out.push(v('future-refused', 'accepted and pushed; expected a clear input error'))
        if (!report?.ok) out.push(v('clear-rejection', `resolved without an ok report: ${JSON.stringify(report)?.slice(0, 300)}`))
        else if (c.expect.pushed) {
          const id = report.change?.id
          const why = c.expect.pushed(pushedDocument(id))
          if (why) out.push(v('exact', why))
        }
      }
      captured.length = 0
      return out
    },
    async good() {
      standIn.reset()
      const d = doc()
      const report = await handler({context: {local: true}, event: {data: d}})
      if (!report?.ok) throw new Error(`good call: report not ok: ${JSON.stringify(report).slice(0, 300)}`)
      const pushed = standIn.syncs().filter((s) => s.body.id === d._id)
      if (pushed.length !== 2) throw new Error(`good call: ${pushed.length} pushes, expected one per started Machine (2)`)
      captured.length = 0
    },
    close: () => standIn.close(),
  }
}

/** `d` is a plain object (prototype Object.prototype) holding each `[key, value]` of `fields` as an own key. */
function keysIntact(d, fields) {
  if (!d || typeof d !== 'object') return 'no pushed document'
  if (Object.getPrototypeOf(d) !== Object.prototype) return 'the document\'s prototype is not Object.prototype'
  for (const [k, value] of fields) {
    if (!Object.hasOwn(d, k)) return `own key ${JSON.stringify(k)} lost`
    const diff = sameJson(d[k], value, `$.${k}`)
    if (diff) return diff
  }
  return null
}
function parseLine(line) {
  try {
    return JSON.parse(line)
  } catch {
    return null
  }
}

/** A random document: the good fields plus a few random fields of random values (seeded). */
function randomDocument(rng, base) {
  const pool = () => {
    const r = rng.int(9)
    if (r === 0) return Number(rng.pick(BIG_INTEGERS))
    if (r === 1) return rng.pick(LONE_SURROGATES)[1]
    if (r === 2) return deepObject(1 + rng.int(40))
    if (r === 3) return deepArray(1 + rng.int(40))
    if (r === 4) return withOwnKeys(specialKeyFields().slice(0, 1 + rng.int(SPECIAL_KEYS.length)))
    if (r === 5) return 'y'.repeat(rng.int(100_000))
    if (r === 6) return rng.pick(oddValues())[1]
    if (r === 7) return rng() * 1e300
    return {a: [1, 'two', null, true, {b: rng.int(1000)}]}
  }
  const entries = Object.entries(base)
  const n = 1 + rng.int(6)
  for (let i = 0; i < n; i++) {
    const key = rng() < 0.3 ? rng.pick(SPECIAL_KEYS) : `f${rng.int(100)}`
    if (rng() < 0.15) {
      const at = rng.int(entries.length)
      entries[at] = [entries[at][0], pool()] // a required field replaced
    } else entries.push([key, pool()])
  }
  return withOwnKeys(entries)
}

// ---------- the webhook entry ----------

async function webhookEntry() {
  const standIn = await startFlyStandIn()
  const env = {
    ...standInVars(standIn.url), SANITY_WEBHOOK_SECRET,
    FLY_SYNC_ROUTES: 'article=/blog/{slug}', FLY_SYNC_BUDGET_MS: '3000', FLY_SYNC_REQUEST_TIMEOUT_MS: '1000',
  }
  const {createWebhookHandler} = await import(`${ARTIFACTS}/dist/functions/fly-sync/index.js`)
  const logs = []
  const webhook = createWebhookHandler(env, (line) => logs.push(line))
  const post = (bytes, headers, signature) => signedPost(webhook, 'http://webhook.local/', 'sanity-webhook-signature', SANITY_WEBHOOK_SECRET, bytes, headers, signature)
  const fields = () => ({_id: fresh('article'), _type: 'article', _rev: fresh('tx'), _updatedAt: nextTime(), title: 'Hi', slug: {current: 'hi'}, op: 'update'})
  /** A delivery body: the good fields as JSON, then `extra` (raw JSON text of more members) spliced in. */
  const body = (extra = '', base = fields()) => `${JSON.stringify(base).slice(0, -1)}${extra ? `,${extra}` : ''}}`
  const pushedText = (id) => standIn.syncs().find((s) => s.body.id === id)?.raw

  const cases = []
  const b = (name, bytes, expect, headers) => cases.push(mk(name, {bytes: Buffer.from(bytes), headers}, expect))
  if (family === 'control') {
    b('an ordinary delivery', body(), {accept: true})
    b('small numbers', body('"n":42'), {accept: true, pushedText: (raw) => literalCheck(raw, 'n', '42')})
    b('nested 20 deep', body(`"deep":${deepJson(20)}`), {accept: true})
    b('a non-ASCII title', body('"title":"Grüße, 世界 😀"'), {accept: true})
  }
  if (family === 'deep') {
    for (const depth of DEPTHS) {
      for (const kind of ['object', 'array', 'mixed']) b(`document field ${depth} deep (${kind})`, body(`"deep":${deepJson(depth, kind)}`))
      b(`whole body ${depth} deep`, deepJson(depth))
      b(`slug ${depth} deep`, body(`"slug":${deepJson(depth)}`))
    }
  }
  if (family === 'numbers') {
    for (const text of BIG_INTEGERS) {
      const f = fields()
      b(`document number ${text}`, body(`"n":${text}`, f), {accept: true, pushedText: (raw) => literalCheck(raw, 'n', text)})
      b(`_rev as the number ${text}`, body('', {...f, _rev: 0}).replace('"_rev":0', `"_rev":${text}`))
    }
    b('number past f64 (1e400)', body('"n":1e400'))
    b('number -0', body('"n":-0'), {accept: true})
  }
  if (family === 'keys') {
    const special = SPECIAL_KEYS.map((k) => `${JSON.stringify(k)}:{"polluted":"via ${k}"}`).join(',')
    b('every special key at the top', body(special), {accept: true, pushedText: (raw) => keysInText(raw, SPECIAL_KEYS)})
    b('special keys nested', body(`"meta":{${special}}`), {accept: true, pushedText: (raw) => keysInText(raw, SPECIAL_KEYS, 'meta')})
    b('__proto__ holding _id', `{"__proto__":{"_id":"sneaky","_type":"article","_rev":"r","_updatedAt":"${nextTime()}"}}`)
    b('duplicate _id', body('"_id":"article-duplicate"'))
    for (const key of ['__proto__', 'constructor', 'prototype']) b(`_id ${key}`, JSON.stringify({...fields(), _id: key}))
  }
  if (family === 'strings') {
    for (const [name, make] of HUGE_STRINGS) {
      const s = make()
      b(`title: ${name}`, body('', {...fields(), title: s}))
      b(`_id: ${name}`, body('', {...fields(), _id: s}))
    }
    for (const [name, s] of LONE_SURROGATES) {
      b(`title escape: ${name}`, body('', {...fields(), title: s}))
      b(`_id escape: ${name}`, body('', {...fields(), _id: s}))
    }
    b('_id of characters beyond Latin-1', body('', {...fields(), _id: `文章-${counter}`}))
  }
  if (family === 'utf8') {
    for (const [name, bytes] of BAD_UTF8) {
      cases.push(mk(`title bytes: ${name}`, {bytes: withBytes(body('"title":"@@"'), bytes)}))
      cases.push(mk(`key bytes: ${name}`, {bytes: withBytes(body('"@@":1'), bytes)}))
      cases.push(mk(`whole body: ${name}`, {bytes: Buffer.from(bytes)}))
    }
    cases.push(mk('UTF-8 BOM before the JSON', {bytes: Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(body())])}))
    cases.push(mk('NUL bytes after the JSON', {bytes: Buffer.concat([Buffer.from(body()), Buffer.alloc(16)])}))
  }
  if (family === 'odd') {
    for (const text of ['', 'null', '[]', '"text"', '42', '{}', 'true', 'not json', `${body()} trailing`, `${body()}${body()}`, '{"_id":', '\u0000']) b(`body ${JSON.stringify(text.slice(0, 30))}`, text)
    b('sanity-document-id of 1 MiB', body(), {}, {'sanity-document-id': 'x'.repeat(1 << 20)})
    b('idempotency-key of 1 MiB', body(), {}, {'idempotency-key': 'k'.repeat(1 << 20)})
    b('sanity-operation purge', body(), {}, {'sanity-operation': 'purge'})
    b('sanity-operation delete against the body', body(), {}, {'sanity-operation': 'delete'})
    b('sanity-transaction-time 2099', body(), {}, {'sanity-transaction-time': '2099-01-01T00:00:00Z'})
  }
  if (family === 'future') {
    for (const [name, at, want] of FUTURE()) b(`_updatedAt ${name}`, body('', {...fields(), _updatedAt: at}), want === 'refuse' ? {refuse: true} : {accept: true})
    // The signature covers the body, not the headers: a body without `_id` and a revision must not take them
    // from headers (a captured delivery replayed with new headers would change another document).
    const {_id, _updatedAt, _rev, ...rest} = fields()
    const headers = {'sanity-document-id': _id, 'sanity-transaction-time': '2099-01-01T00:00:00Z', 'idempotency-key': `replayed-${_id}`, 'sanity-operation': 'update'}
    b('no _id, _rev or _updatedAt in the body; headers give them', JSON.stringify(rest), {refuse: 'signed-body-decides'}, headers)
    b('no _id or _updatedAt in the body (only _rev); headers give them', JSON.stringify({...rest, _rev}), {refuse: 'signed-body-decides'}, headers)
  }
  if (family === 'signature') {
    for (const [name, sign] of signatureVariants(SANITY_WEBHOOK_SECRET)) {
      const text = body()
      cases.push(mk(`signature ${name}`, {bytes: Buffer.from(text), signature: sign(text)}))
    }
  }
  if (family === 'random') {
    for (let i = 0; i < randomCases; i++) {
      const rng = prng(seed * 1000 + i)
      let text
      try {
        text = JSON.stringify(randomDocument(rng, fields()), (k, value) => (typeof value === 'bigint' ? undefined : value))
      } catch {
        text = body()
      }
      if (rng() < 0.3) text = text.replace(/"title":"Hi"/, `"title":"@@"`)
      cases.push(mk(`random #${i}`, {bytes: text.includes('@@') ? withBytes(text, rng.pick(BAD_UTF8)[1]) : Buffer.from(text ?? '')}))
    }
  }

  return {
    cases,
    async call({bytes, headers, signature}) {
      standIn.reset()
      logs.length = 0
      return post(bytes, headers, signature)
    },
    check(c, outcome) {
      const out = []
      if (outcome.kind === 'threw') {
        out.push(v('answers', `threw instead of answering: ${outcome.thrown.message}`))
        return out
      }
      if (outcome.kind !== 'resolved') return out
      const {status, json} = outcome.value
      if (![200, 400, 401, 413].includes(status)) out.push(v('clear-rejection', `HTTP ${status}: ${outcome.value.text.slice(0, 300)}`))
      else if (status === 200 && json?.ok !== true) out.push(v('clear-rejection', `200 without an ok report: ${outcome.value.text.slice(0, 300)}`))
      else if (status === 400 && !(json?.stage === 'input' && typeof json.error === 'string' && json.field)) out.push(v('clear-rejection', `400 without {error, field, stage: input}: ${outcome.value.text.slice(0, 300)}`))
      if (status !== 200 && standIn.requests.length) out.push(v('nothing-sent', `${standIn.requests.length} requests sent for a refused delivery`))
      if (c.expect.accept && status !== 200) out.push(v('accepted', `a valid delivery was refused: HTTP ${status} ${outcome.value.text.slice(0, 300)}`))
      if (c.expect.refuse && status !== 400) out.push(v(typeof c.expect.refuse === 'string' ? c.expect.refuse : 'future-refused', `HTTP ${status}; expected 400: ${outcome.value.text.slice(0, 200)}`))
      out.push(...agreement(outcome.value))
      if (status === 200 && c.expect.pushedText) {
        const why = c.expect.pushedText(pushedText(json?.change?.id))
        if (why) out.push(v('exact', why))
      }
      return out
    },
    async good() {
      standIn.reset()
      const f = fields()
      const response = await post(Buffer.from(JSON.stringify(f)))
      if (response.status !== 200) throw new Error(`good delivery: HTTP ${response.status} ${response.text.slice(0, 300)}`)
      if (standIn.syncs().filter((s) => s.body.id === f._id).length !== 2) throw new Error('good delivery: not pushed to both started Machines')
    },
    close: () => standIn.close(),
  }
}

/** The literal of member `key` in JSON text, compared with the exact integer `text`. */
function literalCheck(raw, key, text) {
  if (!raw) return 'nothing was pushed'
  const m = new RegExp(`"document":\\{.*?"${key}":(-?[0-9.eE+-]+)`).exec(raw)
  if (!m) return `no "${key}" in the pushed document`
  if (!/^-?\d+$/.test(m[1])) return `pushed as ${m[1]}, not ${text} (changed silently)`
  return BigInt(m[1]) === BigInt(text) ? null : `pushed as ${m[1]}, not ${text} (changed silently)`
}
/** Each special key is an own key of the pushed document (or of its `under` field), holding what was sent. */
function keysInText(raw, keys, under) {
  if (!raw) return 'nothing was pushed'
  const body = JSON.parse(raw) // JSON.parse keeps "__proto__" as an own key
  const d = under ? body.document?.[under] : body.document
  if (!d || typeof d !== 'object') return 'no pushed document'
  for (const k of keys) {
    if (!Object.hasOwn(d, k)) return `own key ${JSON.stringify(k)} lost`
    const diff = sameJson(d[k], {polluted: `via ${k}`}, `$.${k}`)
    if (diff) return diff
  }
  return null
}

/**
 * Signature headers for `bodyText`, each `[name, (bodyText) => header | null]`: the valid one and its near misses.
 * Whether each is valid is not decided here: @sanity/webhook's `isValidSignature` decides (see `agreement`).
 */
function signatureVariants(secret) {
  const now = () => Date.now()
  // The MAC over "<t>.<body>" for a `t` written as given (signBytes writes `t` as it gets it).
  const macOver = (t, text) => signBytes(Buffer.from(text), secret, t).split('v1=')[1]
  return [
    ['valid', (text) => signBytes(Buffer.from(text), secret, now())],
    ['t with a leading zero, MAC over the plain t', (text) => signBytes(Buffer.from(text), secret, now()).replace('t=', 't=0')],
    ['t with a leading zero, MAC over "0t"', (text) => {
      const t = `0${now()}`
      return `t=${t},v1=${macOver(t, text)}`
    }],
    ['spaces around it', (text) => ` ${signBytes(Buffer.from(text), secret, now())} `],
    ['a space after the comma', (text) => signBytes(Buffer.from(text), secret, now()).replace(',', ', ')],
    ['uppercase T', (text) => signBytes(Buffer.from(text), secret, now()).replace('t=', 'T=')],
    ['v1 before t', (text) => {
      const [t, v1] = signBytes(Buffer.from(text), secret, now()).split(',')
      return `${v1},${t}`
    }],
    ['a bad v1, then the good one', (text) => signBytes(Buffer.from(text), secret, now()).replace('v1=', 'v1=AAAA,v1=')],
    ['v0 instead of v1', (text) => signBytes(Buffer.from(text), secret, now()).replace('v1=', 'v0=')],
    ['MAC with = padding', (text) => `${signBytes(Buffer.from(text), secret, now())}=`],
    ['MAC in standard base64', (text) => signBytes(Buffer.from(text), secret, now()).replace(/-/g, '+').replace(/_/g, '/')],
    ['t in seconds', (text) => {
      const t = Math.floor(now() / 1000)
      return `t=${t},v1=${macOver(t, text)}`
    }],
    ['t with a fraction', (text) => {
      const t = `${now()}.5`
      return `t=${t},v1=${macOver(t, text)}`
    }],
    ['a trailing field', (text) => `${signBytes(Buffer.from(text), secret, now())},v2=x`],
    ['another secret', (text) => signBytes(Buffer.from(text), `${secret}x`, now())],
    ['the secret with spaces around', (text) => signBytes(Buffer.from(text), ` ${secret} `, now())],
    ['empty', () => ''],
    ['absent', () => null],
    ['1 MiB', () => `t=${now()},v1=${'A'.repeat(1 << 20)}`],
  ]
}

/**
 * POST `bytes` to a Web-standard handler, signed in `header` with `secret` — or carrying `signature` as given
 * (null: no header), in which case @sanity/webhook's verdict on it comes back too. `headers` add to or (null)
 * remove from the request's headers. `{status, text, json, sanityWebhookValid}`.
 */
async function signedPost(handle, url, header, secret, bytes, headers = {}, signature) {
  const h = {'content-type': 'application/json', [header]: signature !== undefined ? signature : signBytes(bytes, secret), ...headers}
  for (const [k, value] of Object.entries(h)) if (value === null) delete h[k]
  const request = new Request(url, {method: 'POST', headers: h, body: bytes})
  // Judged as the handler gets it: HTTP strips a header value's surrounding whitespace (Fetch's Headers does too).
  const sanityWebhookValid = signature !== undefined ? await validForSanityWebhook(bytes, request.headers.get(header), secret) : undefined
  const response = await handle(request)
  const text = await response.text()
  return {status: response.status, text, json: parseLine(text), sanityWebhookValid}
}

/** What @sanity/webhook says of this header for this (UTF-8) body; a malformed header is invalid. */
async function validForSanityWebhook(bytes, header, secret) {
  try {
    return await isValidSignature(Buffer.from(bytes).toString('utf8'), header ?? undefined, secret)
  } catch {
    return false
  }
}

/**
 * A signature decision that disagrees with @sanity/webhook's: a signature it accepts answered 401, or one it
 * refuses not refused (any answer below 400; a 400 or 413 for a header or body over a limit is a refusal too).
 */
function agreement({status, sanityWebhookValid}) {
  if (sanityWebhookValid === undefined) return []
  if (sanityWebhookValid && status === 401) return [v('agrees-with-@sanity/webhook', 'refused (401) a signature @sanity/webhook accepts')]
  if (!sanityWebhookValid && status < 400) return [v('agrees-with-@sanity/webhook', `accepted (HTTP ${status}) a signature @sanity/webhook refuses`)]
  return []
}

// ---------- the receiver: pushes ----------

async function receiverEntry({catchUp = false} = {}) {
  const {createReceiver} = await import(`${ARTIFACTS}/dist/receiver/index.js`)
  const seen = new Map() // id → the change the apply hook got
  const held = new Set()
  const stub = {page: [], ids: null, fetches: 0}
  const client = {
    async fetch(query, params) {
      stub.fetches += 1
      if (/\._id\s*$/.test(query)) return stub.ids ?? [...held]
      if (params && Object.hasOwn(params, 'cursorAt')) return []
      const page = stub.page
      if (typeof page === 'function') return page()
      return page
    },
  }
  const receiver = createReceiver({
    secret: RECEIVER_SECRET,
    machineId: 'machine-fuzz',
    apply(change) {
      seen.set(change.id, change)
      if (change.op === 'delete') held.delete(change.id)
      else held.add(change.id)
    },
    invalidate() {},
    ...(catchUp ? {catchUp: {client, types: ['page'], intervalSeconds: 3600, lagSeconds: 0}} : {}),
  })
  if (catchUp) await receiver.ready
  return {receiver, seen, held, stub}
}

function payload(over = {}) {
  const id = over.id ?? fresh('page')
  const rev = over.rev ?? fresh('r')
  return {
    protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'update', id, type: 'page', rev, updatedAt: nextTime(),
    slug: 's', previousSlug: null, routes: {invalidate: ['/s'], current: ['/s'], previous: []}, tags: [id], locale: null, market: null,
    document: {_id: id, _type: 'page', title: 'T'}, idempotencyKey: `upsert:${id}:${rev}`, ...over,
  }
}

async function pushEntry() {
  const {receiver, seen} = await receiverEntry()
  const post = (bytes, headers, signature) => signedPost(receiver, 'http://machine.internal/internal/content-sync', 'sanity-fly-sync-signature', RECEIVER_SECRET, bytes, headers, signature)
  /** The payload's JSON with `document` replaced by raw JSON text (so it can hold what JSON.stringify cannot). */
  const withDocument = (p, documentText) => JSON.stringify({...p, document: '@@DOC@@'}).replace('"@@DOC@@"', documentText)
  const docText = (p, extra) => `${JSON.stringify(p.document).slice(0, -1)},${extra}}`

  const cases = []
  const r = (name, bytes, expect = {}, p = null, headers) => cases.push(mk(name, {bytes: Buffer.from(bytes), headers, payload: p}, expect))
  if (family === 'control') {
    const ordinary = payload()
    r('an ordinary push', JSON.stringify(ordinary), {accept: true, applied: (doc) => sameJson(doc, ordinary.document)}, ordinary)
    const small = payload()
    r('small numbers', withDocument(small, docText(small, '"n":42')), {accept: true, applied: (doc) => exactCheck(doc?.n, '42', 'document.n')}, small)
    const nested = payload()
    r('nested 20 deep', withDocument(nested, docText(nested, `"deep":${deepJson(20)}`)), {accept: true, applied: (doc) => sameJson(doc?.deep, deepObject(20), 'document.deep')}, nested)
    const text = payload()
    r('a non-ASCII title', JSON.stringify({...text, document: {...text.document, title: 'Grüße, 世界 😀'}}), {accept: true, applied: (doc) => sameJson(doc?.title, 'Grüße, 世界 😀', 'document.title')}, text)
  }
  if (family === 'deep') {
    for (const depth of DEPTHS) {
      for (const kind of ['object', 'array', 'mixed']) {
        const p = payload()
        r(`document field ${depth} deep (${kind})`, withDocument(p, docText(p, `"deep":${deepJson(depth, kind)}`)), {}, p)
      }
      r(`whole body ${depth} deep`, deepJson(depth))
      const p = payload()
      r(`routes ${depth} deep`, JSON.stringify({...p, routes: '@@'}).replace('"@@"', deepJson(depth)), {}, p)
    }
  }
  if (family === 'numbers') {
    for (const text of BIG_INTEGERS) {
      const p = payload()
      r(`document number ${text}`, withDocument(p, docText(p, `"n":${text},"list":[${text}]`)), {accept: true, applied: (doc) => exactCheck(doc?.n, text, 'document.n') ?? exactCheck(doc?.list?.[0], text, 'document.list[0]')}, p)
    }
    const p = payload()
    r('updatedAt as a number', JSON.stringify({...p, updatedAt: 0}).replace('"updatedAt":0', `"updatedAt":${BIG_INTEGERS[4]}`), {}, p)
  }
  if (family === 'keys') {
    const special = SPECIAL_KEYS.map((k) => `${JSON.stringify(k)}:{"polluted":"via ${k}"}`).join(',')
    const fields = SPECIAL_KEYS.map((k) => [k, {polluted: `via ${k}`}])
    let p = payload()
    r('document with every special key', withDocument(p, docText(p, special)), {accept: true, applied: (doc) => keysIntact(doc, fields)}, p)
    p = payload()
    r('special keys nested in the document', withDocument(p, docText(p, `"meta":{${special}}`)), {accept: true, applied: (doc) => keysIntact(doc?.meta, fields)}, p)
    p = payload()
    r('special keys at the payload top', `${JSON.stringify(p).slice(0, -1)},${special}}`, {}, p)
    for (const key of ['__proto__', 'constructor', 'prototype']) {
      p = payload({id: key, idempotencyKey: `upsert:${key}:x${counter}`})
      r(`id ${key}`, JSON.stringify({...p, document: {_id: key, _type: 'page'}}), {}, p)
    }
  }
  if (family === 'strings') {
    for (const [name, make] of HUGE_STRINGS) {
      const s = make()
      const p = payload()
      r(`document title: ${name}`, JSON.stringify({...p, document: {...p.document, title: s}}), {applied: (doc) => (doc?.title === s ? null : 'the applied title differs')}, p)
      const q = payload()
      r(`id: ${name}`, JSON.stringify({...q, id: s, document: {_id: s}}), {}, q)
    }
    const q = payload({id: `文章-${counter}`})
    r('id of characters beyond Latin-1', JSON.stringify({...q, document: {_id: q.id}}), {}, q)
    for (const [name, s] of LONE_SURROGATES) {
      const p = payload()
      r(`document title escape: ${name}`, JSON.stringify({...p, document: {...p.document, title: s}}), {applied: (doc) => (doc?.title === s || doc?.title === s.toWellFormed() ? null : `applied title ${JSON.stringify(doc?.title)}`)}, p)
    }
  }
  if (family === 'utf8') {
    for (const [name, bytes] of BAD_UTF8) {
      const p = payload()
      cases.push(mk(`document title bytes: ${name}`, {bytes: withBytes(withDocument(p, docText(p, '"bad":"@@"')), bytes), payload: p}))
      const q = payload()
      cases.push(mk(`document key bytes: ${name}`, {bytes: withBytes(withDocument(q, docText(q, '"@@":1')), bytes), payload: q}))
      cases.push(mk(`whole body: ${name}`, {bytes: Buffer.from(bytes)}))
    }
  }
  if (family === 'odd') {
    for (const text of ['', 'null', '[]', '"text"', '42', '{}', 'true', 'not json', '{"protocol":', '\u0000']) r(`body ${JSON.stringify(text)}`, text)
    for (const [name, value] of [['string', '"text"'], ['number', '42'], ['array', '[1,2]'], ['null', 'null'], ['true', 'true']]) {
      const p = payload()
      r(`document ${name}`, withDocument(p, value), {}, p)
    }
    for (const [field, value] of [['routes', '"x"'], ['tags', '[1,2]'], ['id', '42'], ['op', '"purge"'], ['idempotencyKey', 'null'], ['protocol', 'null']]) {
      const p = payload()
      r(`${field} = ${value}`, JSON.stringify({...p, [field]: '@@'}).replace('"@@"', value), {}, p)
    }
    const p = payload()
    r('idempotency-key header of 1 MiB', JSON.stringify(p), {}, p, {'idempotency-key': 'k'.repeat(1 << 20)})
  }
  if (family === 'future') {
    for (const [name, at, want] of FUTURE()) {
      const p = payload({updatedAt: at})
      r(`updatedAt ${name}`, JSON.stringify(p), want === 'refuse' ? {refuse: true} : {accept: true}, p)
      const d = payload({op: 'delete', operation: 'delete', document: null, updatedAt: at})
      r(`a delete with updatedAt ${name}`, JSON.stringify({...d, idempotencyKey: `delete:${d.id}:${d.rev}`}), want === 'refuse' ? {refuse: true} : {}, {...d, op: 'upsert', operation: 'update', idempotencyKey: `delete:${d.id}:${d.rev}`})
    }
  }
  if (family === 'signature') {
    for (const [name, sign] of signatureVariants(RECEIVER_SECRET)) {
      const p = payload()
      const text = JSON.stringify(p)
      cases.push(mk(`signature ${name}`, {bytes: Buffer.from(text), signature: sign(text), payload: p}))
    }
  }
  if (family === 'random') {
    for (let i = 0; i < randomCases; i++) {
      const rng = prng(seed * 1000 + i)
      const p = payload()
      let text
      try {
        text = JSON.stringify({...p, document: randomDocument(rng, p.document)}, (k, value) => (typeof value === 'bigint' ? undefined : value))
      } catch {
        text = JSON.stringify(p)
      }
      cases.push(mk(`random #${i}`, {bytes: rng() < 0.2 ? withBytes(text.replace('"title":"T"', '"title":"@@"'), rng.pick(BAD_UTF8)[1]) : Buffer.from(text), payload: p}))
    }
  }

  let lastRefused = null
  return {
    cases,
    async call({bytes, headers, signature}) {
      return post(bytes, headers, signature)
    },
    check(c, outcome) {
      const out = []
      lastRefused = null
      if (outcome.kind === 'threw') {
        out.push(v('answers', `the handler threw instead of answering: ${outcome.thrown.type}: ${outcome.thrown.message}`))
        lastRefused = c.input.payload
        return out
      }
      if (outcome.kind !== 'resolved') return out
      const {status, json, text} = outcome.value
      if (![200, 400, 401, 413, 422].includes(status)) out.push(v('clear-rejection', `HTTP ${status}: ${text.slice(0, 300)}`))
      else if (status !== 200 && typeof json?.error !== 'string') out.push(v('clear-rejection', `HTTP ${status} without an error message: ${text.slice(0, 300)}`))
      if (status !== 200) lastRefused = c.input.payload
      if (c.expect.accept && !(status === 200 && json?.status === 'applied')) out.push(v('accepted', `a valid push was not applied: HTTP ${status} ${text.slice(0, 300)}`))
      if (c.expect.refuse && !(status >= 400 && status < 500)) out.push(v('future-refused', `HTTP ${status} ${json?.status ?? ''}; expected a 4xx refusal`))
      out.push(...agreement(outcome.value))
      if (status === 200 && json?.status === 'applied' && c.expect.applied) {
        const change = seen.get(c.input.payload?.id)
        const why = change ? (Object.getPrototypeOf(change) !== Object.prototype ? 'the change object\'s prototype is not Object.prototype' : c.expect.applied(change.document)) : 'the apply hook never saw the change'
        if (why) out.push(v('exact', why))
      }
      return out
    },
    async good() {
      // After a refusal, the same change (id, revision, idempotency key) made good must apply: nothing of the
      // refused push was recorded. Otherwise a fresh change.
      const sane = (x) => typeof x === 'string' && x.length > 0 && x.length < 200 && /^[\w.:-]+$/.test(x) && !SPECIAL_KEYS.includes(x)
      const again = lastRefused && sane(lastRefused.id) && sane(lastRefused.rev) && sane(lastRefused.idempotencyKey)
      const base = again ? payload({id: lastRefused.id, rev: lastRefused.rev, idempotencyKey: lastRefused.idempotencyKey}) : payload()
      const p = {...base, document: {_id: base.id, _type: 'page', title: 'good'}}
      const r1 = await post(Buffer.from(JSON.stringify(p)))
      if (r1.status !== 200 || r1.json?.status !== 'applied') {
        throw new Error(`good push (${again ? 'the refused change again, made good' : 'a fresh change'}): HTTP ${r1.status} ${r1.text.slice(0, 300)}`)
      }
      if (seen.get(p.id)?.document?.title !== 'good') throw new Error('good push: the apply hook did not get the good document')
    },
    close: () => receiver.close?.(),
  }
}

// ---------- the receiver: reconciliation ----------

async function reconciliationEntry() {
  const {receiver, seen, stub} = await receiverEntry({catchUp: true})
  const doc = (fields = {}) => ({_id: fresh('page'), _type: 'page', _rev: fresh('r'), _updatedAt: nextTime(), title: 'T', ...fields})
  const docWith = (entries) => withOwnKeys([...Object.entries(doc()), ...entries])

  const cases = []
  const p = (name, page, expect = {}) => cases.push(mk(name, {page}, expect))
  if (family === 'control') {
    const a = doc({body: [{_type: 'block', children: [{text: 'hi'}]}]})
    p('an ordinary document', [a], {accept: [a._id], applied: (x) => sameJson(x?.body, a.body, '$.body')})
    const n = doc({n: 42})
    p('small numbers', [n], {accept: [n._id], applied: (x) => exactCheck(x?.n, '42', 'document.n')})
    const d = doc({deep: deepObject(20)})
    p('nested 20 deep', [d], {accept: [d._id], applied: (x) => sameJson(x?.deep, deepObject(20), '$.deep')})
    const t = doc({title: 'Grüße, 世界 😀'})
    p('a non-ASCII title', [t], {accept: [t._id], applied: (x) => sameJson(x?.title, 'Grüße, 世界 😀', '$.title')})
  }
  if (family === 'deep') {
    for (const depth of DEPTHS) {
      p(`document field ${depth} objects deep`, [doc({deep: deepObject(depth)})])
      p(`document field ${depth} arrays deep`, [doc({deep: deepArray(depth)})])
      p(`page ${depth} arrays deep`, deepArray(depth))
      p(`page of ${depth}-deep documents`, [deepObject(depth)])
    }
  }
  if (family === 'numbers') {
    for (const text of BIG_INTEGERS) {
      // A client that parsed the answer with JSON.parse hands over a JS number: the precision beyond 2^53 is gone
      // before the receiver sees it. What must hold: the app gets that same number (as a number, or a BigInt that
      // is that number).
      const n = Number(text)
      const sameNumber = (x, where) => (typeof x === 'bigint' ? Number(x) === n : x === n) ? null : `${where}: ${safeString(x)} is not the client's ${n}`
      const d = doc({n, list: [n]})
      p(`document number ${text} (as a client parses it)`, [d], {accept: [d._id], applied: (x) => sameNumber(x?.n, 'document.n') ?? sameNumber(x?.list?.[0], 'document.list[0]')})
      const e = doc({n: BigInt(text)})
      p(`document BigInt ${text}`, [e], {applied: (x) => exactCheck(x?.n, text, 'document.n')})
    }
  }
  if (family === 'keys') {
    const fields = specialKeyFields()
    const d = docWith(fields)
    p('document with every special key', [d], {accept: [d._id], applied: (x) => keysIntact(x, fields)})
    const j = JSON.parse(JSON.stringify(doc()).replace(/^\{/, '{"__proto__":{"polluted":true},'))
    p("JSON.parse'd document with __proto__", [j], {accept: [j._id], applied: (x) => (x && Object.hasOwn(x, '__proto__') ? sameJson(x.__proto__, {polluted: true}, '$.__proto__') : 'the applied document lost its own __proto__ key')})
    const n = doc({meta: withOwnKeys(fields)})
    p('special keys nested', [n], {accept: [n._id], applied: (x) => keysIntact(x?.meta, fields)})
    for (const key of ['__proto__', 'constructor', 'prototype']) p(`_id ${key}`, [doc({_id: key})])
  }
  if (family === 'strings') {
    for (const [name, make] of HUGE_STRINGS) {
      const s = make()
      const d = doc({title: s})
      p(`title: ${name}`, [d], {applied: (x) => (x?.title === s ? null : 'the applied title differs')})
      p(`_id: ${name}`, [doc({_id: s})])
    }
    for (const [name, s] of LONE_SURROGATES) {
      p(`title: ${name}`, [doc({title: s})], {applied: (x) => (x?.title === s || x?.title === s.toWellFormed() ? null : `applied title ${JSON.stringify(x?.title)}`)})
      p(`_id: ${name}`, [doc({_id: `page-${s}`})])
    }
    p('_id of characters beyond Latin-1', [doc({_id: `文章-${counter}`})])
  }
  if (family === 'cyclic' || family === 'throwing') {
    for (const [name, value] of family === 'cyclic' ? cyclicValues() : throwingValues()) {
      p(`page = ${name}`, value)
      p(`document = ${name}`, [value])
      p(`document field = ${name}`, [doc({odd: value})])
    }
  }
  if (family === 'odd') {
    for (const [name, value] of oddValues()) {
      p(`page = ${name}`, value)
      p(`document = ${name}`, [value])
      p(`document field = ${name}`, [doc({odd: value})])
      p(`_updatedAt = ${name}`, [doc({_updatedAt: value})])
    }
    p('the client rejects with a string', () => Promise.reject('query failed (a string)'))
    p('the client throws an object', () => {
      throw {code: 42}
    })
  }
  if (family === 'future') {
    for (const [name, at, want] of FUTURE()) {
      const d = doc({_updatedAt: at})
      p(`_updatedAt ${name}`, [d], want === 'refuse' ? {refuse: [d._id]} : {accept: [d._id]})
    }
  }
  if (family === 'random') {
    for (let i = 0; i < randomCases; i++) {
      const rng = prng(seed * 1000 + i)
      p(`random #${i}`, Array.from({length: 1 + rng.int(3)}, () => randomDocument(rng, doc())))
    }
  }

  return {
    cases,
    async call({page}) {
      stub.page = page
      return receiver.catchUp()
    },
    check(c, outcome) {
      const out = []
      if (outcome.kind === 'threw') {
        out.push(v('result-not-throw', `catchUp() rejected instead of reporting in its result: ${outcome.thrown.type}: ${outcome.thrown.message}`))
        return out
      }
      if (outcome.kind !== 'resolved') return out
      const result = outcome.value
      if (!result || typeof result !== 'object') {
        out.push(v('result-not-throw', `no run result: ${safeString(result)}`))
        return out
      }
      if (result.error !== undefined && (typeof result.error !== 'string' || result.error.trim().length === 0 || /\[object \w+\]/.test(result.error))) {
        out.push(v('clear-rejection', `result.error says nothing: ${JSON.stringify(safeString(result.error))}`))
      }
      if (typeof result.error === 'string' && /memory access out of bounds|unreachable|RuntimeError/i.test(result.error)) out.push(v('no-trap', `the run hit a wasm trap: ${result.error}`))
      for (const f of result.failed ?? []) if (typeof f.error !== 'string' || /\[object \w+\]/.test(f.error)) out.push(v('clear-rejection', `a failure without a message: ${safeString(f.error)}`))
      // Every document of the page is applied, or the result says why not (skipped, failed, or the run's error).
      // (A failure the receiver cannot attribute is listed with id "?": it accounts for one document.)
      if (Array.isArray(c.input.page) && result.error === undefined) {
        let unattributed = (result.failed ?? []).filter((f) => f.id === '?').length
        c.input.page.forEach((d, i) => {
          const id = d !== null && typeof d === 'object' ? d._id : undefined
          if (typeof id === 'string' && seen.has(id)) return
          if ((result.skipped ?? []).some((s) => String(s).startsWith(`result[${i}]`)) || (result.failed ?? []).some((f) => f.id === id)) return
          if (typeof id === 'string' && seen.has(id.toWellFormed())) return void out.push(v('exact', `document ${i} was applied under another _id (${JSON.stringify(id.toWellFormed())}, not ${JSON.stringify(id)})`))
          if (unattributed-- > 0) return
          out.push(v('accounted', `document ${i} was neither applied nor reported: ${JSON.stringify(result).slice(0, 300)}`))
        })
      }
      for (const id of c.expect.accept ?? []) {
        if (!seen.has(id)) out.push(v('accepted', `a valid document was not applied: ${JSON.stringify(result).slice(0, 300)}`))
      }
      for (const id of c.expect.refuse ?? []) if (seen.has(id)) out.push(v('future-refused', 'applied; expected it skipped or failed'))
      // The high-water mark never runs ahead of the clock: queries "changed since the mark" would then miss
      // every real edit until that time.
      if (typeof result.mark === 'string' && Date.parse(result.mark) > Date.now() + MAX_SKEW_MS) out.push(v('mark-not-future', `the mark moved to ${result.mark}`))
      if (c.expect.applied) {
        const docs = Array.isArray(c.input.page) ? c.input.page : []
        for (const d of docs) {
          const change = typeof d?._id === 'string' ? seen.get(d._id) : undefined
          if (!change) continue
          const why = Object.getPrototypeOf(change) !== Object.prototype ? 'the change object\'s prototype is not Object.prototype' : c.expect.applied(change.document)
          if (why) out.push(v('exact', why))
        }
      }
      return out
    },
    async good() {
      const d = doc({title: 'good'})
      stub.page = [d]
      const result = await receiver.catchUp()
      if (result?.error || !seen.has(d._id) || seen.get(d._id).document?.title !== 'good') {
        throw new Error(`good page: not applied: ${JSON.stringify(result).slice(0, 300)}`)
      }
    },
    close: () => receiver.close(),
  }
}

// ---------- the loop ----------

const entries = {function: functionEntry, webhook: webhookEntry, receiver: pushEntry, reconciliation: reconciliationEntry}
const entry = await entries[entryName]()
emit({cases: entry.cases.length})
for (const c of entry.cases) {
  emit({start: c.name})
  const outcome = await settle(() => entry.call(c.input))
  const violations = [...common(outcome), ...entry.check(c, outcome)]
  const good = await settle(() => entry.good())
  if (good.kind !== 'resolved') violations.push(v('next-good', good.kind === 'hung' ? 'the next good call hung' : `the next good call failed: ${good.thrown.message}`))
  const summary = outcome.kind === 'resolved' ? {kind: 'resolved', status: outcome.value?.status, detail: describeValue(outcome.value)} : outcome.kind === 'threw' ? {kind: 'threw', ...outcome.thrown} : {kind: 'hung'}
  emit({case: c.name, outcome: summary, violations})
  if (good.kind !== 'resolved') {
    emit({stopped: `the entry is unusable after ${JSON.stringify(c.name)}; the remaining cases of this family were not run`})
    break
  }
}
await entry.close?.()
emit({done: true})
process.exit(0)
