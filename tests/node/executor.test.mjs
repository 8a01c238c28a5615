// The shim as an executor: it shares a GET only where the core allows it (`reuseMs`). Driven with scripted
// engines against a loopback server that holds every answer until the test releases it.
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
        return {type: 'send', requests: [{id: 1, method: 'GET', url, headers: [], body: null, timeoutMs: 5000, reuseMs, log}]}
      }
      return answer === undefined ? {type: 'wait', untilMs: Date.now() + 60_000} : {type: 'done', report: {answer}}
    },
    handleResponse(_id, _status, _headers, body) {
      answer = JSON.parse(body)
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
