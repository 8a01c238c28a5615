// The bad-input corpus (tests/bad-input/*.json) through the BUILT Function module: every Function-event and
// webhook case crosses the JavaScript↔wasm boundary as the shim hands it over (wasm.ts `SyncEngine.fromFunctionEvent`
// / `fromWebhook`: JSON text and raw bytes) and must be refused with what tests/bad_inputs.rs expects of the Rust
// entry — stage, class, field, a message that starts with the field and contains the expected fragment — plus
// the webhook status the entry answers with (config 500, the signature header 401, any other input 400). All
// cases run in one process, one after another: the module's process memory (the configuration read) must not
// let one case's answer leak into the next, and no case may leave the module unusable (a good event after each
// family still starts a run).
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {createHmac} from 'node:crypto'
import {readdirSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import {loadWasm, SyncEngine} from '../../wasm.ts'
import {ROOT} from './support/run.mjs'

const DIR = join(ROOT, 'tests/bad-input')
const NOW = 1_800_000_000_000 // as tests/bad_inputs.rs
const DEFAULT_ENV = {
  FLY_APP_NAME: 'web',
  FLY_API_TOKEN: 'FlyV1 fm2_abc',
  FLY_SYNC_SECRET: '0123456789abcdef-sync',
  SANITY_WEBHOOK_SECRET: 'webhook-secret',
}

const bodyOf = (c) => (typeof c.bodyBase64 === 'string' ? new Uint8Array(Buffer.from(c.bodyBase64, 'base64')) : new TextEncoder().encode(c.body))

/** src/signature.rs `sign`: `t=<ms>,v1=<base64url HMAC-SHA256 of "<ms>." + body>`. */
const sign = (body, atMs, secret) => `t=${atMs},v1=${createHmac('sha256', secret).update(`${atMs}.`).update(body).digest('base64url')}`

/** Start one case's run through the module: the rejection thrown, or `null` when it was (wrongly) accepted. */
function run(c) {
  const env = c.env ?? DEFAULT_ENV
  const nowMs = c.nowMs ?? NOW
  try {
    let engine
    if (c.input === 'function_event') {
      engine = SyncEngine.fromFunctionEvent(env, typeof c.eventText === 'string' ? c.eventText : JSON.stringify(c.event), 'null', nowMs, 1)
    } else {
      const body = bodyOf(c)
      const headers = {...c.headers}
      if (c.sign) headers['sanity-webhook-signature'] = sign(body, c.sign.atMs, c.sign.secret)
      engine = SyncEngine.fromWebhook(env, JSON.stringify(headers), body, nowMs, 1)
    }
    engine.free()
    return null
  } catch (error) {
    return error
  }
}

/** The status the webhook entry answers a refusal with (src/entry.rs `webhook_status`). */
const statusOf = (e) => (e.stage === 'config' ? 500 : e.field === 'sanity-webhook-signature' ? 401 : 400)

test('every Function-event and webhook case of the bad-input corpus is refused by the built module as the Rust entry refuses it', () => {
  loadWasm()
  const cases = readdirSync(DIR)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((name) => ({name, c: JSON.parse(readFileSync(join(DIR, name), 'utf8'))}))
    .filter(({c}) => c.input === 'function_event' || c.input === 'webhook')
  assert.ok(cases.filter(({c}) => c.input === 'function_event').length >= 40, 'the Function-event cases')
  assert.ok(cases.filter(({c}) => c.input === 'webhook').length >= 15, 'the webhook cases')

  const good = {data: {_id: 'page-1', _type: 'page', _rev: 'r1', _updatedAt: '2027-01-15T08:00:00Z', op: 'update', slug: 'a'}}
  const failures = []
  for (const {name, c} of cases) {
    const e = run(c)
    if (e === null) {
      failures.push(`${name}: accepted`)
      continue
    }
    if (e instanceof Error) {
      failures.push(`${name}: threw ${e.name}: ${e.message} (not a Rejection)`)
      continue
    }
    const x = c.expect
    const checks = [
      [e.stage === x.stage, `stage ${e.stage}`],
      [e.class === x.class, `class ${e.class}`],
      [e.field === x.field, `field ${e.field}`],
      [typeof e.message === 'string' && e.message.startsWith(`\`${x.field}\``), 'message does not start with the field'],
      [typeof e.message === 'string' && e.message.includes(x.message), `message lacks ${JSON.stringify(x.message)}`],
      [e.httpStatus === (x.status ?? statusOf(x)), `httpStatus ${e.httpStatus}`],
    ]
    for (const [ok, what] of checks) if (!ok) failures.push(`${name}: ${what}; message: ${e.message}`)
    // The module still starts a good run after each refusal (nothing left held or half-done).
    assert.equal(run({input: 'function_event', event: good, nowMs: NOW}), null, `a good event after ${name}`)
  }
  assert.deepEqual(failures, [], `${failures.length} of ${cases.length} cases wrong`)
})
