// One cold start, as a fresh process: import a bundled Function handler and make its first real call — a real
// event, a real environment (the parent's spawn env), context.clientOptions for the project — with every HTTP
// request answered in this process from canned answers (`fetch` replaced before the import; the client gets the
// same `fetch` through its options). Node's own fetch costs tens of milliseconds on its first use in a fresh
// process, whichever handler calls it; answered here, the figure is the handler's own cost.
//
// node bench/cold-start-child.mjs <bundle.js> <case.json>   → prints `BENCH {importMs, callMs, requests}` on stdout
import {readFileSync} from 'node:fs'
import {pathToFileURL} from 'node:url'

const [bundle, casePath] = process.argv.slice(2)
const c = JSON.parse(readFileSync(casePath, 'utf8'))

function header(headers, name) {
  if (!headers) return undefined
  if (Array.isArray(headers)) return headers.find(([k]) => k.toLowerCase() === name)?.[1]
  return Object.entries(headers).find(([k]) => k.toLowerCase() === name)?.[1]
}

/** A `Response` as much as the handlers and @sanity/client read of one (a real one would load Node's fetch). */
function answer(status, text) {
  const headers = new Map([['content-type', 'application/json; charset=utf-8']])
  return {
    ok: status >= 200 && status < 300,
    status,
    statusText: String(status),
    redirected: false,
    body: null,
    headers: {
      get: (k) => headers.get(k.toLowerCase()) ?? null,
      has: (k) => headers.has(k.toLowerCase()),
      forEach: (f) => headers.forEach((v, k) => f(v, k)),
      entries: () => headers.entries(),
      [Symbol.iterator]: () => headers.entries(),
    },
    text: async () => text,
    json: async () => JSON.parse(text),
    arrayBuffer: async () => new TextEncoder().encode(text).buffer,
  }
}

let requests = 0
globalThis.fetch = async (input, init = {}) => {
  requests++
  const url = String(input)
  if (url.includes('/data/query/')) return answer(200, JSON.stringify({result: {documents: [], count: 0, types: []}, ms: 1}))
  if (url.includes('/data/doc/')) return answer(200, JSON.stringify({documents: [c.document]}))
  if (url.endsWith('/machines')) return answer(200, c.listBody)
  if (url.endsWith('/restart')) return answer(200, '{"ok":true}')
  if (url.endsWith(c.syncPath)) {
    const machine = header(init.headers, 'fly-force-instance-id') ?? c.firstMachine
    return answer(200, JSON.stringify({protocol: 'sanity-fly-sync/1', machine, status: 'applied', restart: null}))
  }
  return answer(404, '{"error":"not found"}')
}

const t0 = performance.now()
const m = await import(pathToFileURL(bundle).href)
const t1 = performance.now()
// Its log lines go to stdout as in production (the parent reads them and throws them away).
await m.handler({context: {clientOptions: {...c.clientOptions, fetch: globalThis.fetch}}, event: c.event})
const t2 = performance.now()
process.stdout.write(`BENCH ${JSON.stringify({importMs: t1 - t0, callMs: t2 - t1, requests})}\n`)
