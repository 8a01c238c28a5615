// An old/new pair: a receiver of this version (it speaks sanity-fly-sync/1) behind the local Fly, and a Function
// one protocol version ahead — the real handler, whose pushes are rewritten to `sanity-fly-sync/2` and signed again
// on the way, as a newer Function would send them. The receiver must refuse each push clearly and apply nothing; the
// Function must report every Machine as failed with the receiver's reason, without retrying. Needs `npm run build`.
import {after, before, test} from 'node:test'
import assert from 'node:assert/strict'
import {createHmac} from 'node:crypto'
import {startFleet, DEFAULT_TOKEN} from '../../local/fly/index.mjs'
import {createReceiver} from '../../receiver/index.ts'
import {handler} from '../../function.ts'

const SECRET = 'versioning-sync-secret-0123456789'
const NEWER = 'sanity-fly-sync/2'
const applied = []
let fleet

/** What a Function one protocol version ahead would send: the same change, a newer `protocol`, signed anew. */
async function fromNewerFunction(request) {
  const body = JSON.parse(await request.text())
  const raw = JSON.stringify({...body, protocol: NEWER})
  const t = Date.now()
  const headers = new Headers(request.headers)
  headers.set('sanity-fly-sync-signature', `t=${t},v1=${createHmac('sha256', SECRET).update(`${t}.${raw}`).digest('base64url')}`)
  return new Request(request.url, {method: 'POST', headers, body: raw})
}

before(async () => {
  fleet = await startFleet({
    app: 'web',
    machines: 2,
    regions: ['ord'],
    handlerFor: (machine) => {
      const receive = createReceiver({secret: SECRET, machineId: machine.id, apply: (change) => void applied.push({machine: machine.id, id: change.id})})
      return async (request) => receive(await fromNewerFunction(request))
    },
  })
})
after(() => fleet?.close())

test('a receiver older than the Function refuses the newer protocol clearly; the Function reports it and applies nothing', async () => {
  const saved = {...process.env}
  Object.assign(process.env, {
    FLY_APP_NAME: 'web',
    FLY_API_URL: fleet.api.url,
    FLY_APP_URL: fleet.url,
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SECRET,
    FLY_SYNC_ROUTES: 'article=/blog/{slug}',
    FLY_SYNC_BUDGET_MS: '10000',
  })
  const lines = []
  const log = console.log
  console.log = (line) => lines.push(String(line))
  let error
  try {
    await handler({context: {local: true}, event: {data: {_id: 'article-1', _type: 'article', _rev: 'r1', _updatedAt: '2026-11-27T10:00:00Z', slug: 'one', op: 'create', previousSlug: null, title: 'One'}}})
  } catch (e) {
    error = e
  } finally {
    console.log = log
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
  }

  assert.ok(error, 'the run fails: no Machine took the change')
  const {report} = error
  assert.equal(report.ok, false)
  const machines = report.targets[0].machines
  assert.equal(machines.length, 2)
  for (const m of machines) {
    assert.equal(m.sync, 'failed', JSON.stringify(m))
    assert.equal(m.attempts, 1, 'a refusal is not retried')
    assert.equal(m.error.class, 'fatal')
    assert.match(m.error.message, /HTTP 400/)
    assert.match(m.error.message, /protocol/)
    assert.match(m.error.message, /`sanity-fly-sync\/1`, the version this receiver speaks/)
    assert.match(m.error.message, /update sanity-fly-sync on the older side/)
  }
  assert.deepEqual(applied, [], 'nothing was applied')
  // Each Machine was asked once: the refusal came from the receiver, not from a retry budget running out.
  assert.equal(fleet.log.filter((e) => e.method === 'POST').length, 2)
})
