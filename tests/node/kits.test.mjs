// The receiver kits' own glue (receiver/kits/): the node:http / Express handler around the body (raw bytes, a
// body parser that ran first, a cap) and the Next.js route's lazy start. The kits on real frameworks: the package
// tests (Hono, Express, React Router, Astro examples) and next-app.test.mjs (Next.js on the local Fly).
import {test} from 'node:test'
import assert from 'node:assert/strict'
import express from 'express'
import {encodeSignatureHeader} from '@sanity/webhook'
import {createNodeReceiver} from '../../receiver/kits/node.ts'
import {createNextRoute} from '../../receiver/kits/next.ts'

const secret = 'kits-test-secret-0123456789'
const raw = JSON.stringify({
  protocol: 'sanity-fly-sync/1', target: 'web', op: 'upsert', operation: 'create', id: 'page-1', type: 'page', rev: 'r1',
  updatedAt: '2026-11-27T10:00:00Z', slug: 'a', previousSlug: null, routes: {invalidate: ['/a'], current: ['/a'], previous: []},
  tags: ['page-1', 'page'], locale: null, market: null, document: {_id: 'page-1', title: 'A'}, idempotencyKey: 'upsert:page-1:r1',
})

async function serve(app) {
  const server = await new Promise((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s))
  })
  return {url: `http://127.0.0.1:${server.address().port}/internal/content-sync`, close: () => new Promise((r) => server.close(r))}
}

async function push(url, body = raw) {
  const r = await fetch(url, {method: 'POST', headers: {'content-type': 'application/json', 'sanity-fly-sync-signature': await encodeSignatureHeader(body, Date.now(), secret)}, body})
  return {status: r.status, json: await r.json()}
}

test('Express: after express.raw() the signed bytes still verify; after express.json() the push is refused, saying why', async () => {
  const stored = []
  const sync = () => createNodeReceiver({secret, machineId: 'm1', apply: (c) => void stored.push(c.id)})
  const rawApp = express()
  rawApp.use(express.raw({type: '*/*'}))
  rawApp.post('/internal/content-sync', sync())
  const a = await serve(rawApp)
  try {
    const r = await push(a.url)
    assert.equal(r.status, 200)
    assert.equal(r.json.machine, 'm1')
  } finally {
    await a.close()
  }

  const jsonApp = express()
  jsonApp.use(express.json())
  jsonApp.post('/internal/content-sync', sync())
  const b = await serve(jsonApp)
  try {
    const r = await push(b.url)
    assert.equal(r.status, 500)
    assert.match(r.json.error, /parsed before the sync handler; mount it before express\.json\(\)/)
  } finally {
    await b.close()
  }
  assert.deepEqual(stored, ['page-1'], 'applied once, by the raw-body app only')
})

test('node:http: a body over the cap is refused with 413 before the core reads it', async () => {
  let applied = 0
  const app = express()
  app.post('/internal/content-sync', createNodeReceiver({secret, machineId: 'm1', maxBodyBytes: 1024, apply: () => void applied++}))
  const s = await serve(app)
  try {
    const big = JSON.stringify({...JSON.parse(raw), document: {_id: 'page-1', title: 'x'.repeat(2048)}})
    const r = await push(s.url, big)
    assert.equal(r.status, 413)
    assert.equal(applied, 0)
  } finally {
    await s.close()
  }
})

test('Next.js route: created on the first request (next build loads the module without secrets); bad options answer 500 naming the option', async () => {
  const route = createNextRoute({secret: undefined, apply() {}})
  const r = await route(new Request('http://app/internal/content-sync', {method: 'POST', body: raw}))
  assert.equal(r.status, 500)
  const body = await r.json()
  assert.equal(body.field, 'secret')
})
