// The shim as an executor: it sends each batch's requests (a fan-out is one batch: its body once, one header that
// varies per request) and logs one line per batch; it shares a GET only where the core allows it (`reuseMs`).
// Driven with scripted engines against a loopback server that holds every answer until the test releases it.
import assert from 'node:assert/strict'
import {createServer} from 'node:http'
import {once} from 'node:events'
import {test} from 'node:test'
import {runEngine} from '../../function.ts'

/** A loopback server that counts GETs per path and answers each (with its sequence number) only on release. */
async function holdingServer() {
  const held = []
  const seen = new Map()
  const arrivals = new EventTarget()
  const server = createServer((req, res) => {
    const n = (seen.get(req.url) ?? 0) + 1
    seen.set(req.url, n)
    held.push(() => res.end(JSON.stringify({path: req.url, n})))
    arrivals.dispatchEvent(new Event('request'))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const base = `http://127.0.0.1:${server.address().port}`
  return {
    base,
    count: (path) => seen.get(path) ?? 0,
    /** Resolve once `path` has been asked `n` times (bounded by the test's own timeout). */
    async arrived(path, n) {
      while ((seen.get(path) ?? 0) < n) await once(arrivals, 'request')
    },
    release() {
      for (const answer of held.splice(0)) answer()
    },
    close: () => new Promise((resolve) => server.close(resolve)),
  }
}

/** An engine that sends one GET and is done once it has the answer, reporting the answer's body. */
function oneGet(url, reuseMs) {
  let sent = false
  let answer
  return {
    poll() {
      if (!sent) {
        sent = true
        const log = {target: 't', kind: 'list', method: 'GET', url, attempt: 1}
        return {type: 'send', batches: [{ids: [1], method: 'GET', url, headers: [], body: null, timeoutMs: 5000, reuseMs, log}]}
      }
      return answer === undefined ? {type: 'wait', untilMs: Date.now() + 60_000} : {type: 'done', report: {answer}, webhookStatus: 200}
    },
    handleResponse(_id, _status, _headers, body) {
      answer = JSON.parse(new TextDecoder().decode(body))
    },
    handleFailure(_id, _timedOut, message) {
      answer = {failure: message}
    },
  }
}

const quiet = () => {}

test('a GET the core marks not reusable never joins an identical one in flight', {timeout: 10_000}, async () => {
  const server = await holdingServer()
  const url = `${server.base}/v1/apps/a/machines`
  const first = runEngine(oneGet(url, 1000), quiet)
  await server.arrived('/v1/apps/a/machines', 1)
  const fresh = runEngine(oneGet(url, 0), quiet) // a roll's fresh list
  const reusing = runEngine(oneGet(url, 1000), quiet) // another content-only run of the burst
  await server.arrived('/v1/apps/a/machines', 2)
  server.release()
  const [a, b, c] = await Promise.all([first, fresh, reusing])
  assert.equal(server.count('/v1/apps/a/machines'), 2, 'the reusable one joined; the fresh one went out')
  assert.equal(a.answer.n, 1)
  assert.equal(b.answer.n, 2, 'the fresh list is its own answer')
  assert.equal(c.answer.n, 1, 'the reusable one got the shared answer')
  await server.close()
})

test('an answer is reused only within reuseMs, and never for reuseMs 0', {timeout: 10_000}, async () => {
  const server = await holdingServer()
  const url = `${server.base}/v1/apps/b/machines`
  const first = runEngine(oneGet(url, 60_000), quiet)
  await server.arrived('/v1/apps/b/machines', 1)
  server.release()
  assert.equal((await first).answer.n, 1)
  // Answered just now: a reusable GET takes it; one with reuseMs 0 does not.
  assert.equal((await runEngine(oneGet(url, 60_000), quiet)).answer.n, 1)
  const fresh = runEngine(oneGet(url, 0), quiet)
  await server.arrived('/v1/apps/b/machines', 2)
  server.release()
  assert.equal((await fresh).answer.n, 2)
  await server.close()
})

test('a batch is one request per id, each with its own value of the varying header and the body as given; one log line', {timeout: 10_000}, async () => {
  const seen = []
  const server = createServer(async (req, res) => {
    const chunks = []
    for await (const chunk of req) chunks.push(chunk)
    seen.push({machine: req.headers['fly-force-instance-id'], sig: req.headers['sig'], body: Buffer.concat(chunks).toString()})
    res.end(JSON.stringify({machine: req.headers['fly-force-instance-id']}))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const url = `http://127.0.0.1:${server.address().port}/internal/content-sync`
  const payload = '{"document":"é"}'
  const answers = new Map()
  let polled = false
  const engine = {
    poll() {
      if (!polled) {
        polled = true
        const log = {target: 'web', kind: 'sync', method: 'POST', url, attempt: 1, machines: ['m1', 'm2', 'm3']}
        const vary = {name: 'fly-force-instance-id', values: ['m1', 'm2', 'm3']}
        return {type: 'send', batches: [{ids: [7, 8, 9], method: 'POST', url, headers: [['sig', 's']], vary, body: 0, timeoutMs: 5000, reuseMs: 0, log}]}
      }
      return answers.size < 3 ? {type: 'wait', untilMs: Date.now() + 60_000} : {type: 'done', report: {answers: Object.fromEntries(answers)}, webhookStatus: 200}
    },
    body(index) {
      assert.equal(index, 0)
      return new TextEncoder().encode(payload)
    },
    handleResponse(id, status, _headers, body) {
      answers.set(id, [status, JSON.parse(new TextDecoder().decode(body)).machine])
    },
    handleFailure(id, _timedOut, message) {
      answers.set(id, ['failed', message])
    },
  }
  const lines = []
  const report = await runEngine(engine, (line) => lines.push(line))
  assert.deepEqual(report.answers, {7: [200, 'm1'], 8: [200, 'm2'], 9: [200, 'm3']}, 'each id is fed its own request\'s answer')
  assert.deepEqual(seen.map((s) => s.machine).sort(), ['m1', 'm2', 'm3'])
  assert.ok(seen.every((s) => s.body === payload && s.sig === 's'), 'the body and the common headers go with each')
  assert.deepEqual(lines.map((l) => l.action), ['send', 'done'], 'one line for the batch, one for the report')
  assert.deepEqual(lines[0].ids, [7, 8, 9])
  await new Promise((resolve) => server.close(resolve))
})
