// Hostile values for the JavaScript↔wasm boundary (boundary-fuzz.test.mjs): deep nesting, integers past 2^53 and
// 2^64, `__proto__` / `constructor` / `prototype` keys, huge strings, bytes that are not UTF-8, and values JSON has
// no word for. Deterministic: everything random comes from a seeded generator.
import {createHmac} from 'node:crypto'

/** A seeded PRNG in [0, 1) (mulberry32): the same seed gives the same cases. */
export function prng(seed) {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  next.int = (n) => Math.floor(next() * n)
  next.pick = (list) => list[next.int(list.length)]
  return next
}

/** Depths: past any sane limit (10 000), and either side of serde_json's 128-level recursion limit. */
export const DEPTHS = [10_000, 129, 127]

/** An object `{a: {a: … leaf}}` `depth` levels deep, built without recursion. */
export function deepObject(depth, leaf = 1, key = 'a') {
  let value = leaf
  for (let i = 0; i < depth; i++) value = {[key]: value}
  return value
}

/** An array `[[… leaf]]` `depth` levels deep. */
export function deepArray(depth, leaf = 1) {
  let value = leaf
  for (let i = 0; i < depth; i++) value = [value]
  return value
}

/** The JSON text of a value `depth` levels deep (objects, arrays or both alternating), built as text. */
export function deepJson(depth, kind = 'object') {
  const open = (i) => (kind === 'array' || (kind === 'mixed' && i % 2) ? '[' : '{"a":')
  const close = (i) => (kind === 'array' || (kind === 'mixed' && i % 2) ? ']' : '}')
  let head = ''
  let tail = ''
  for (let i = 0; i < depth; i++) {
    head += open(i)
    tail = close(i) + tail
  }
  return `${head}1${tail}`
}

/** Integers JavaScript numbers cannot all hold: 2^53 and past it, 2^64 and past it, below -2^63, 30 digits. */
export const BIG_INTEGERS = [
  '9007199254740992',
  '9007199254740993',
  '18446744073709551615',
  '18446744073709551616',
  '18446744073709551617',
  '-9223372036854775809',
  '123456789012345678901234567890',
]

/** Keys with a meaning to JavaScript objects (and the empty key). */
export const SPECIAL_KEYS = ['__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', '']

/**
 * An object with these own properties, in order — `__proto__` included as an ordinary own key (what JSON.parse
 * gives for `{"__proto__": …}`), never as the prototype.
 */
export function withOwnKeys(entries) {
  const out = {}
  for (const [key, value] of entries) Object.defineProperty(out, key, {value, enumerable: true, writable: true, configurable: true})
  return out
}

/** A document whose fields are every special key, each holding a small object that names it. */
export const specialKeyFields = () => SPECIAL_KEYS.map((k) => [k, {polluted: `via ${k || '(empty)'}`, n: 1}])

/** Strings: 1 MiB of ASCII, 1 MiB of 3-byte characters, 256 KiB of emoji (surrogate pairs), NULs and controls. */
export const HUGE_STRINGS = [
  ['1 MiB ascii', () => 'x'.repeat(1 << 20)],
  ['1 MiB of €', () => '€'.repeat((1 << 20) / 3)],
  ['256 Ki emoji', () => '😀'.repeat(1 << 16)],
  ['64 Ki NUL and controls', () => '\u0000\u0001\u001f\u007f\u2028\u2029'.repeat(1 << 13)],
]

/** Byte sequences that are not UTF-8: a lone 0xff, an overlong NUL, an encoded surrogate, past U+10FFFF, truncated. */
export const BAD_UTF8 = [
  ['0xff', [0xff]],
  ['overlong NUL', [0xc0, 0x80]],
  ['encoded surrogate', [0xed, 0xa0, 0x80]],
  ['past U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ['truncated 3-byte', [0xe2, 0x82]],
]

/** Strings JavaScript allows and UTF-8 cannot carry: lone surrogates. */
export const LONE_SURROGATES = [
  ['lone high surrogate', 'a\ud800b'],
  ['lone low surrogate', '\udfff'],
  ['reversed pair', '\ude00\ud83d'],
]

/** `text` with `bytes` spliced in at the first `@@` (so a JSON string can carry non-UTF-8 bytes). */
export function withBytes(text, bytes) {
  const [before, after] = text.split('@@')
  return Buffer.concat([Buffer.from(before, 'utf8'), Buffer.from(bytes), Buffer.from(after ?? '', 'utf8')])
}

/**
 * Values JSON has no word for, or that fight being read: fresh on each call (some are cyclic, or throw when
 * touched). `[name, value]`.
 */
export function oddValues() {
  const sparse = [1, , 3] // eslint-disable-line no-sparse-arrays
  const extra = [1, 2]
  extra.extra = 'x'
  const nullProto = Object.create(null)
  nullProto.a = 1
  return [
    ['undefined', undefined],
    ['null', null],
    ['NaN', NaN],
    ['Infinity', Infinity],
    ['-Infinity', -Infinity],
    ['-0', -0],
    ['BigInt 2^64+1', 18446744073709551617n],
    ['Symbol', Symbol('odd')],
    ['function', function odd() {}],
    ['Date', new Date(0)],
    ['invalid Date', new Date(Number.NaN)],
    ['Map', new Map([['a', 1]])],
    ['Set', new Set([1])],
    ['Uint8Array', new Uint8Array([1, 2, 255])],
    ['ArrayBuffer', new ArrayBuffer(8)],
    ['RegExp', /x/g],
    ['Error', new Error('odd')],
    ['boxed String', new String('s')], // eslint-disable-line no-new-wrappers
    ['Promise', Promise.resolve(1)],
    ['class instance', new (class Point { x = 1 })()],
    ['null prototype', nullProto],
    ['sparse array', sparse],
    ['array with a property', extra],
    ['frozen', Object.freeze({a: 1})],
    ['toJSON returning BigInt', {toJSON: () => 1n}],
  ]
}

/** Values that throw when read (a getter, a proxy, toJSON): `[name, value]`, fresh on each call. */
export function throwingValues() {
  return [
    ['throwing getter', Object.defineProperty({}, 'boom', {enumerable: true, get() { throw new Error('getter') }})],
    ['throwing proxy', new Proxy({}, {get() { throw new Error('proxy get') }, ownKeys() { throw new Error('proxy keys') }})],
    ['toJSON that throws', {toJSON() { throw new Error('toJSON') }}],
    ['getter throwing a string', Object.defineProperty({}, 'boom', {enumerable: true, get() { throw 'a string' }})], // eslint-disable-line no-throw-literal
  ]
}

/** Values that contain themselves (no finite JSON): `[name, value]`, fresh on each call. */
export function cyclicValues() {
  const object = {a: 1}
  object.self = object
  const array = [1]
  array.push(array)
  const deep = deepObject(50)
  let tip = deep
  while (tip.a !== 1) tip = tip.a
  tip.a = deep
  return [
    ['cyclic object', object],
    ['cyclic array', array],
    ['cycle 50 levels down', deep],
  ]
}

/**
 * A value as an exact integer (BigInt), or null when it does not say one: a BigInt, an integral number (exact
 * for what it holds), a string of digits, or a raw-JSON number (`JSON.rawJSON`).
 */
export function exactInteger(value) {
  if (typeof value === 'bigint') return value
  if (typeof value === 'number') return Number.isInteger(value) ? BigInt(value) : null
  if (typeof value === 'string') return /^-?\d+$/.test(value) ? BigInt(value) : null
  if (value !== null && typeof value === 'object' && typeof JSON.isRawJSON === 'function' && JSON.isRawJSON(value)) {
    return /^-?\d+$/.test(value.rawJSON) ? BigInt(value.rawJSON) : null
  }
  return null
}

/**
 * Sanity's webhook signature over raw bytes: `t=<ms>,v1=<base64url HMAC-SHA256 of "<t>." + body>`. The same
 * scheme as `encodeSignatureHeader` of @sanity/webhook (the test checks they agree on UTF-8 bodies), for bodies
 * that are not UTF-8, which that function (it takes a string) cannot sign.
 */
export function signBytes(body, secret, atMs = Date.now()) {
  const mac = createHmac('sha256', secret).update(`${atMs}.`).update(Buffer.from(body)).digest('base64url')
  return `t=${atMs},v1=${mac}`
}

/** Own keys of Object.prototype now: a hostile input must never add one (prototype pollution). */
export const prototypeKeys = () => Reflect.ownKeys(Object.prototype).map(String).sort().join(',')
