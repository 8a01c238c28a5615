// Checks that cross the JavaScript↔wasm conversion: a seeded fuzz driver (tests/node/support/boundary-driver.mjs)
// throws hostile values at every entry of the BUILT artifacts — the Function's `handler` and
// `createWebhookHandler` (dist/functions/fly-sync/index.js), the receiver's pushes and its reconciliation through
// a stub `catchUp.client` (dist/receiver/index.js) — with no network but loopback. Each (entry, family) runs in a
// process of its own, so a crash, or a trap that leaves the module unusable, is pinned to its family and cannot
// spoil the next. Families: deep nesting (10 000, and either side of 128), integers past 2^53 and 2^64,
// `__proto__` / `constructor` / `prototype` keys, huge strings and lone surrogates, bytes that are not UTF-8,
// values JSON has no word for (odd, cyclic, throwing when read), signature headers against @sanity/webhook,
// revision times in the future, and seeded random documents; `control` holds ordinary inputs, which must pass (the harness flags nothing good).
//
// Properties (each violation names its case):
//   settles              every call settles within its bound
//   throws-errors        nothing but an Error is ever thrown
//   no-trap              no wasm trap, and no borrow left held by a JS exception unwinding through wasm
//   next-good            after any hostile input, a good call in the same process works
//   clear-rejection      a refusal is a clear bad-input answer — Function: an Error "sanity-fly-sync: input
//                        error: …" (the log's rejection has stage `input`); webhook: 400 {error, field, stage:
//                        input} or 401/413; receiver: 4xx with {error}; reconciliation: an error in the run result
//   answers              the webhook and receiver handlers answer (a Response), never throw
//   result-not-throw     a reconciliation run reports in its result, never rejects
//   accounted            every document of a reconciliation page is applied or reported
//   nothing-sent         a refused event or delivery sends nothing
//   accepted             a valid input (special keys, large numbers) is not refused
//   exact                what is accepted arrives unchanged: a `__proto__` key stays an own key and the object's
//                        prototype is Object.prototype; a large integer is not rounded (BigInt or exact)
//   no-pollution         Object.prototype never changes
//   agrees-with-@sanity/webhook   a signature header is accepted exactly when @sanity/webhook accepts it
//   future-refused       a revision time past the small skew bound (in 2099, a day or 10 minutes ahead) is refused
//                        at every entry (30 s ahead is accepted)
//   signed-body-decides  a webhook body without `_id` and a revision time is refused (400), whatever the unsigned
//                        headers say
//   mark-not-future      reconciliation's high-water mark never runs ahead of the clock
import {test, describe} from 'node:test'
import assert from 'node:assert/strict'
import {join} from 'node:path'
import {encodeSignatureHeader, isValidSignature} from '@sanity/webhook'
import {ROOT, run} from './support/run.mjs'
import {signBytes} from './support/hostile.mjs'

const DRIVER = join(ROOT, 'tests/node/support/boundary-driver.mjs')
const SEED = 20261127
const RANDOM_CASES = 25
const FAMILIES = {
  function: ['control', 'deep', 'numbers', 'keys', 'strings', 'odd', 'cyclic', 'throwing', 'future', 'random'],
  webhook: ['control', 'deep', 'numbers', 'keys', 'strings', 'utf8', 'odd', 'signature', 'future', 'random'],
  receiver: ['control', 'deep', 'numbers', 'keys', 'strings', 'utf8', 'odd', 'signature', 'future', 'random'],
  reconciliation: ['control', 'deep', 'numbers', 'keys', 'strings', 'odd', 'cyclic', 'throwing', 'future', 'random'],
}

/** Run one (entry, family) in its own process; its case results, and what went wrong with the process itself. */
async function fuzz(entry, family) {
  const r = await run(process.execPath, [DRIVER, entry, family, String(SEED), String(RANDOM_CASES)], {timeoutMs: 300_000})
  const lines = r.output.split('\n').filter((l) => l.startsWith('@@')).map((l) => JSON.parse(l.slice(2)))
  const planned = lines.find((l) => 'cases' in l)?.cases
  const results = lines.filter((l) => 'case' in l)
  const stopped = lines.find((l) => 'stopped' in l)?.stopped
  const done = lines.some((l) => l.done)
  const lastStarted = lines.filter((l) => 'start' in l).at(-1)?.start
  return {code: r.code, signal: r.signal, planned, results, stopped, done, lastStarted, tail: r.output.split('\n').filter((l) => !l.startsWith('@@')).slice(-15).join('\n')}
}

/** Violations grouped by property: `{property: ['case — detail', …]}`. */
function byProperty(results) {
  const out = {}
  for (const r of results) for (const x of r.violations) (out[x.property] ??= []).push(`${r.case} — ${x.detail}`)
  return out
}

test('signBytes signs as @sanity/webhook does (so bytes that are not UTF-8 can be signed the same way)', async () => {
  const secret = 'a-secret-for-the-signer-check'
  for (const body of ['{}', '{"_id":"a","title":"Grüße 😀"}', 'x'.repeat(10_000)]) {
    const at = 1_800_000_000_123
    assert.equal(signBytes(Buffer.from(body), secret, at), await encodeSignatureHeader(body, at, secret))
    assert.equal(await isValidSignature(body, signBytes(Buffer.from(body), secret, Date.now()), secret), true)
  }
})

for (const [entry, families] of Object.entries(FAMILIES)) {
  describe(`boundary fuzz: ${entry}`, () => {
    for (const family of families) {
      test(`${entry} / ${family}`, async () => {
        const f = await fuzz(entry, family)
        assert.ok(f.done, `the process ended early (exit ${f.code}, signal ${f.signal}) during ${JSON.stringify(f.lastStarted)}:\n${f.tail}`)
        assert.equal(f.code, 0)
        assert.ok(f.planned > 0, 'the family has cases')
        assert.ok(f.results.length === f.planned || f.stopped, `${f.results.length} of ${f.planned} cases ran`)
        const violations = byProperty(f.results)
        const summary = Object.entries(violations)
          .map(([property, list]) => `${property} (${list.length}):\n    ${list.slice(0, 4).join('\n    ')}${list.length > 4 ? `\n    … and ${list.length - 4} more` : ''}`)
          .join('\n  ')
        assert.deepEqual(Object.keys(violations), [], `${entry} / ${family}: ${f.results.length} of ${f.planned} cases run${f.stopped ? ` (${f.stopped})` : ''}; properties violated:\n  ${summary}`)
      })
    }
  })
}
