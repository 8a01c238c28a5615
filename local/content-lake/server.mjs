// A local Content Lake: the part of Sanity's HTTP API that `@sanity/client` uses — GROQ queries (groq-js), documents
// by id, mutations in one transaction each — over a `DocumentStore` (store.mjs), on loopback. Point the real client
// at it with `createClient({...lake.clientConfig(), token?})`, i.e. `apiHost: lake.url, useProjectHostname: false`.
//
//   GET  /v{apiVersion}/data/query/{dataset}?query=…&$param=<JSON>&perspective=…&returnQuery=false
//   POST /v{apiVersion}/data/query/{dataset}            {query, params}
//        → {query?, result, syncTags, ms}               (syncTags: the local rule of sync-tags.mjs)
//   GET  /v{apiVersion}/data/doc/{dataset}/{id}[,{id}…]  → {documents, omitted: [{id, reason: 'existence'}]}
//   POST /v{apiVersion}/data/mutate/{dataset}?returnIds&returnDocuments&visibility&dryRun&transactionId
//        {mutations, transactionId?}                    → {transactionId, results: [{id, operation, document?}], documentIds?}
//
// Errors have Sanity's shapes, which the client turns into useful messages: a GROQ syntax error is a 400
// `{error: {type: 'queryParseError', description, query, start, end}}`, a failed mutation a 409 (400 when malformed)
// `{error: {type: 'mutationError', description, items: [{index, error: {type, id, description, …}}]}}`, a private
// dataset without (or with a wrong) token a 401 `{error: 'Unauthorized', message, statusCode: 401}`.
import http from 'node:http'
import {performance} from 'node:perf_hooks'
import {parse, evaluate} from 'groq-js'
import {DocumentStore, MutationError, publishedId} from './store.mjs'
import {mulberry32} from '../random.mjs'
import {invalidatedTags, readTracker} from './sync-tags.mjs'

/** The API version the client config of `clientConfig()` uses. */
export const API_VERSION = '2025-05-01'
// From this API version on, a query without `perspective` reads the `published` perspective; before it, `raw`.
const PUBLISHED_BY_DEFAULT_FROM = '2025-02-19'
// From this API version on, a query response carries `syncTags` (sync-tags.mjs has the local rule).
const SYNC_TAGS_FROM = '2021-03-25'
const VISIBILITIES = new Set(['sync', 'async', 'deferred'])

class HttpError extends Error {
  constructor(status, body) {
    super(typeof body.error === 'string' ? `${body.error}: ${body.message}` : body.error?.description)
    this.status = status
    this.body = body
  }
}

const flat = (status, error, message) => new HttpError(status, {error, message, statusCode: status})
const badRequest = (description) => new HttpError(400, {error: {description, type: 'httpBadRequest'}})

/**
 * Start a local Content Lake on 127.0.0.1.
 * @param {{store?: DocumentStore, projectId?: string, dataset?: string, token?: string, port?: number}} [options]
 *   `token`: the dataset is private, every request needs `Authorization: Bearer <token>`. Without it, no request
 *   is checked (anyone reads drafts and writes — unlike Sanity, where a public dataset still hides drafts from
 *   anonymous readers and every write needs a token).
 */
// `anonymousQueries` (private datasets): 'unauthorized' answers a query without a token with 401; 'empty' answers it
// as if the dataset had no documents. Which of the two Sanity does is unverified here, so both can be tested.
// `latencyMs`: added (real time) before every answer, ms or `[min, max]` drawn per request from `seed` (a
// realistic API round trip for benchmarks; 0 by default).
export async function startContentLake({store = new DocumentStore(), projectId = 'local', dataset = 'production', token, anonymousQueries = 'unauthorized', port = 0, latencyMs = 0, seed = 1} = {}) {
  const random = mulberry32(seed)
  const latency = () => (Array.isArray(latencyMs) ? Math.round(latencyMs[0] + random() * (latencyMs[1] - latencyMs[0])) : latencyMs)
  /** @type {Array<{method: string, path: string, search: string, status: number, requestBytes: number, responseBytes: number, resultBytes?: number, transactionId?: string, error?: string}>} */
  const log = []
  // The Live Content API's side: each committed transaction that changed published content, with the sync tags it
  // invalidates (sync-tags.mjs), in commit order; `onSyncTags` listeners hear each as it commits.
  /** @type {Array<{id: string, at: number, tags: string[]}>} */
  const liveEvents = []
  const syncTagListeners = new Set()
  const unsubscribe = store.onCommit((transaction) => {
    const tags = invalidatedTags({projectId, dataset}, transaction)
    if (tags.length === 0) return
    const event = {id: transaction.id, at: transaction.at, tags}
    liveEvents.push(event)
    for (const listener of syncTagListeners) listener(structuredClone(event))
  })

  const server = http.createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1')
    const entry = {method: req.method ?? 'GET', path: url.pathname, search: url.search, status: 0, requestBytes: 0, responseBytes: 0}
    let status = 200
    let body
    try {
      body = await route(req, url, entry)
    } catch (error) {
      if (error instanceof HttpError) {
        status = error.status
        body = error.body
      } else {
        status = 500
        body = {error: {description: `local Content Lake: ${error?.stack ?? error}`, type: 'internalError'}}
      }
      entry.error = typeof body.error === 'string' ? `${body.error} - ${body.message}` : body.error.description
    }
    entry.status = status
    const delay = latency()
    if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay))
    const text = JSON.stringify(body)
    entry.responseBytes = Buffer.byteLength(text)
    log.push(entry)
    res.writeHead(status, {'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text)})
    res.end(text)
  })

  /** Route one request; returns the JSON body of a 200 or throws an HttpError. */
  async function route(req, url, entry) {
    const auth = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '')
    let anonymous = false
    if (token !== undefined) {
      anonymous = !auth && anonymousQueries === 'empty' && /\/data\/query\//.test(url.pathname)
      if (!auth && !anonymous) throw flat(401, 'Unauthorized', `Dataset "${dataset}" is private: send Authorization: Bearer <token>`)
      if (auth && auth[1] !== token) throw new HttpError(401, {error: 'Unauthorized', message: 'Session not found', statusCode: 401, errorCode: 'SIO-401-ANF'})
    }
    const headerProject = req.headers['x-sanity-project-id']
    if (headerProject !== undefined && headerProject !== projectId) {
      throw flat(404, 'Not Found', `Project "${headerProject}" not found (this local Content Lake serves project "${projectId}")`)
    }
    const m = /^\/v(1|X|\d{4}-\d{2}-\d{2})\/data\/(query|doc|mutate)\/([^/]+)(?:\/(.*))?$/.exec(url.pathname)
    if (!m) {
      const version = /^\/v([^/]+)\//.exec(url.pathname)
      if (version && !/^(1|X|\d{4}-\d{2}-\d{2})$/.test(version[1])) throw badRequest(`Invalid API version "${version[1]}": use 1, X or a date (YYYY-MM-DD)`)
      throw flat(404, 'Not Found', `The local Content Lake does not serve ${req.method} ${url.pathname} (only data/query, data/doc, data/mutate)`)
    }
    const [, apiVersion, endpoint, pathDataset, rest] = m
    if (decodeURIComponent(pathDataset) !== dataset) {
      throw flat(404, 'Not Found', `Dataset "${decodeURIComponent(pathDataset)}" not found for project ID "${projectId}"`)
    }
    if (endpoint === 'query') {
      if (rest !== undefined) throw flat(404, 'Not Found', `No such endpoint: ${url.pathname}`)
      if (req.method !== 'GET' && req.method !== 'POST') throw flat(405, 'Method Not Allowed', `${req.method} is not allowed on data/query`)
      return query(req, url, apiVersion, anonymous, entry)
    }
    if (endpoint === 'doc') {
      if (req.method !== 'GET') throw flat(405, 'Method Not Allowed', `${req.method} is not allowed on data/doc`)
      if (!rest) throw badRequest('data/doc needs one or more document ids: /data/doc/{dataset}/{id}[,{id}…]')
      return documents(url, rest)
    }
    if (req.method !== 'POST') throw flat(405, 'Method Not Allowed', `${req.method} is not allowed on data/mutate`)
    if (rest !== undefined) throw flat(404, 'Not Found', `No such endpoint: ${url.pathname}`)
    return mutate(req, url, entry)
  }

  async function query(req, url, apiVersion, anonymous, entry) {
    const started = performance.now()
    const search = url.searchParams
    let text = search.get('query')
    let params = {}
    if (req.method === 'POST') {
      const body = await readJson(req, entry)
      if (!body || typeof body !== 'object') throw badRequest('the request body must be {query, params?}')
      text = body.query
      params = body.params ?? {}
      if (typeof params !== 'object' || Array.isArray(params)) throw badRequest('params must be an object')
    } else {
      for (const [key, value] of search) {
        if (!key.startsWith('$')) continue
        try {
          params[key.slice(1)] = JSON.parse(value)
        } catch {
          throw badRequest(`Unable to parse value of "${key}=${value}". Please quote string values.`)
        }
      }
    }
    if (typeof text !== 'string' || !text.trim()) throw badRequest('Missing query: pass ?query=… or POST {query}')
    const perspective = parsePerspective(search.get('perspective'), apiVersion)
    // `lastLiveEventId` (sent by clients that follow the Live Content API) asks for content at least as new as that
    // event: every commit here is visible at once, so any answer is.
    const {result, syncTags} = await evaluateQuery(text, params, perspective, anonymous)
    const answer = search.get('returnQuery') === 'false' ? {} : {query: text}
    const tagged = apiVersion === 'X' || (apiVersion !== '1' && apiVersion >= SYNC_TAGS_FROM)
    entry.resultBytes = Buffer.byteLength(JSON.stringify(result) ?? 'null')
    return {...answer, result, ...(tagged ? {syncTags} : {}), ms: Math.round((performance.now() - started) * 100) / 100}
  }

  /** Evaluate GROQ with groq-js over the store seen through `perspective`: the result only. */
  async function runQuery(text, params, perspective, anonymous = false) {
    return (await evaluateQuery(text, params, perspective, anonymous)).result
  }

  /** Evaluate GROQ with groq-js over the store seen through `perspective`: `{result, syncTags}`. */
  async function evaluateQuery(text, params, perspective, anonymous = false) {
    let tree
    try {
      tree = parse(text, {params})
    } catch (error) {
      throw queryError(text, error)
    }
    for (const name of parameterNames(tree)) {
      if (!(name in params)) {
        const at = new RegExp(`\\$${name}(?![\\w])`).exec(text)?.index ?? 0
        throw new HttpError(400, {
          error: {description: `param $${name} referenced, but not provided`, query: text, start: at, end: at + name.length + 1, type: 'queryParseError'},
        })
      }
    }
    const docs = view(anonymous ? [] : store.all(), perspective).sort((a, b) => (a._id < b._id ? -1 : a._id > b._id ? 1 : 0))
    const reads = readTracker({projectId, dataset}, docs)
    try {
      const value = await evaluate(tree, {dataset: reads.dataset, params, timestamp: new Date(store.now()), sanity: {projectId, dataset}})
      const result = await value.get()
      return {result, syncTags: reads.tags(result)}
    } catch (error) {
      throw new HttpError(400, {error: {description: String(error?.message ?? error), query: text, type: 'queryError'}})
    }
  }

  function documents(url, rest) {
    const ids = rest.split(',').map((id) => decodeURIComponent(id)).filter(Boolean)
    const all = url.searchParams.get('includeAllVersions') === 'true'
    const found = []
    const omitted = []
    for (const id of ids) {
      const docs = all ? store.all().filter((d) => publishedId(d._id) === publishedId(id)) : [store.get(id)].filter(Boolean)
      if (docs.length) found.push(...docs)
      else omitted.push({id, reason: 'existence'})
    }
    // `excludeContent=true` (client.documentsExists) asks only which ids are missing.
    return {documents: url.searchParams.get('excludeContent') === 'true' ? [] : found, omitted}
  }

  async function mutate(req, url, entry) {
    const search = url.searchParams
    const flag = (name) => search.get(name) === 'true'
    const visibility = search.get('visibility') ?? 'sync'
    if (!VISIBILITIES.has(visibility)) throw badRequest(`visibility must be sync, async or deferred, not "${visibility}"`)
    const body = await readJson(req, entry)
    if (!body || typeof body !== 'object' || !Array.isArray(body.mutations)) throw badRequest('the request body must be {mutations: [...]}')
    const transactionId = search.get('transactionId') ?? body.transactionId ?? undefined
    // visibility is accepted: every commit here is visible at once (what `sync` promises).
    const {mutations, origin} = await resolveSelections(body.mutations)
    let tx
    try {
      tx = store.transaction(mutations, {transactionId, dryRun: flag('dryRun')})
    } catch (error) {
      if (error instanceof MutationError) {
        const index = origin[error.index] ?? error.index
        throw new HttpError(error.statusCode, {
          error: {type: 'mutationError', description: `Mutation failed: ${error.item.description}`, items: [{index, error: error.item}]},
        })
      }
      if (error?.committed) {
        entry.transactionId = error.transactionId
        throw new HttpError(500, {
          error: {type: 'internalError', description: `committed as ${error.transactionId}, but an onCommit listener threw: ${error.message}`},
        })
      }
      throw error
    }
    entry.transactionId = tx.transactionId
    const finalState = new Map(tx.changes.map((c) => [c.id, c.after ?? c.before]))
    const results = tx.results.map(({id, operation}) =>
      flag('returnDocuments') ? {id, operation, document: finalState.get(id) ?? store.get(id) ?? null} : {id, operation},
    )
    return {transactionId: tx.transactionId, results, ...(flag('returnIds') ? {documentIds: results.map((r) => r.id)} : {})}
  }

  /** `{delete: {query, params}}` / `{patch: {query, params, …}}` → one mutation per matching document (raw). */
  async function resolveSelections(input) {
    const mutations = []
    const origin = []
    for (const [index, mutation] of input.entries()) {
      const [kind, arg] = (mutation && typeof mutation === 'object' && Object.entries(mutation).length === 1 && Object.entries(mutation)[0]) || []
      if ((kind === 'delete' || kind === 'patch') && arg && arg.id === undefined && typeof arg.query === 'string') {
        const {query: text, params = {}, ...operations} = arg
        const found = await runQuery(text, params, 'raw')
        const ids = (Array.isArray(found) ? found : [found]).map((d) => d?._id).filter((id) => typeof id === 'string')
        for (const id of new Set(ids)) {
          mutations.push({[kind]: {...operations, id}})
          origin.push(index)
        }
      } else {
        mutations.push(mutation)
        origin.push(index)
      }
    }
    return {mutations, origin}
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, '127.0.0.1', () => {
      server.off('error', reject)
      resolve()
    })
  })
  const address = server.address()
  const url = `http://127.0.0.1:${typeof address === 'object' && address ? address.port : port}`
  return {
    url,
    apiHost: url,
    projectId,
    dataset,
    store,
    log,
    /** Every committed transaction that changed published content: `{id, at, tags}` (id: the transaction's). */
    liveEvents,
    /** Call `listener({id, at, tags})` after each such commit (what Sanity's sync-tag-invalidate Function gets as
     *  `{syncTags: tags}`); returns the unsubscribe function. */
    onSyncTags(listener) {
      syncTagListeners.add(listener)
      return () => syncTagListeners.delete(listener)
    },
    /** What `createClient` needs to talk to this lake (add `token` for a private one). */
    clientConfig(overrides = {}) {
      return {projectId, dataset, apiHost: url, useProjectHostname: false, useCdn: false, apiVersion: API_VERSION, ...overrides}
    },
    close() {
      unsubscribe()
      syncTagListeners.clear()
      return new Promise((resolve) => {
        server.close(() => resolve(undefined))
        server.closeAllConnections()
      })
    },
  }
}

/**
 * `perspective` query parameter → `'raw'` or a list of layers over published (`[]` = published only,
 * `['drafts']`, `['summer', 'drafts']` = release `summer` over drafts over published).
 */
function parsePerspective(value, apiVersion) {
  if (value === null || value === '') {
    return apiVersion === 'X' || (apiVersion !== '1' && apiVersion >= PUBLISHED_BY_DEFAULT_FROM) ? [] : 'raw'
  }
  const names = value.split(',').map((s) => s.trim()).filter(Boolean)
  if (names.includes('raw')) {
    if (names.length > 1) throw badRequest('The raw perspective can not be combined with other perspectives')
    return 'raw'
  }
  return names.map((n) => (n === 'previewDrafts' ? 'drafts' : n)).filter((n) => n !== 'published')
}

/** The documents a perspective sees. Overlaid documents get the published `_id` and `_originalId`, as in Sanity. */
function view(docs, perspective) {
  if (perspective === 'raw') return docs
  const isPublished = (d) => !d._id.startsWith('drafts.') && !d._id.startsWith('versions.')
  if (!perspective.length) return docs.filter(isPublished)
  const byId = new Map(docs.map((d) => [d._id, d]))
  const out = []
  for (const base of new Set(docs.map((d) => publishedId(d._id)))) {
    const layered = perspective.map((name) => byId.get(name === 'drafts' ? `drafts.${base}` : `versions.${name}.${base}`)).find(Boolean)
    const chosen = layered ?? byId.get(base)
    if (chosen) out.push({...chosen, _id: base, _originalId: chosen._id})
  }
  return out
}

/** Names of the `$parameters` a parsed query refers to. */
function parameterNames(node, out = new Set()) {
  if (Array.isArray(node)) for (const child of node) parameterNames(child, out)
  else if (node && typeof node === 'object') {
    if (node.type === 'Parameter' && typeof node.name === 'string') out.add(node.name)
    for (const child of Object.values(node)) if (child && typeof child === 'object') parameterNames(child, out)
  }
  return out
}

/** A groq-js parse failure → Sanity's `queryParseError` (with a position when groq-js gives one). */
function queryError(text, error) {
  const message = String(error?.message ?? error)
  if (typeof error?.position === 'number') {
    const description = message.replace(/^Syntax error in GROQ query at position \d+:?\s*/, '') || 'syntax error'
    const start = Math.min(error.position, text.length)
    return new HttpError(400, {error: {description, query: text, start, end: Math.min(start + 1, text.length), type: 'queryParseError'}})
  }
  return new HttpError(400, {error: {description: message, query: text, type: 'queryParseError'}})
}

/** The request's body as JSON; its size in bytes goes to `entry.requestBytes`. */
async function readJson(req, entry) {
  const chunks = []
  for await (const chunk of req) chunks.push(chunk)
  const bytes = Buffer.concat(chunks)
  entry.requestBytes = bytes.length
  const text = bytes.toString('utf8')
  try {
    return JSON.parse(text)
  } catch {
    throw badRequest(`Unable to parse the request body as JSON${text ? '' : ' (it is empty)'}`)
  }
}
