// The reference receiver: what a Fly app mounts at /internal/content-sync (docs/protocol.md). A Web-standard
// `Request → Response` handler, so it fits a Next.js route handler, a Remix/Astro endpoint, Hono, or node:http
// through a small adapter. Verification, duplicate and order checks, and the catch-up queries are the wasm
// core's (src/receiver.rs, src/catch_up.rs); this file runs the app's hooks, the queries and the timer.
import {loadWasm, SyncReceiver} from '../wasm.ts'
import type {Deletions} from '../pkg/types/Deletions.js'
import type {Page} from '../pkg/types/Page.js'
import type {Query} from '../pkg/types/Query.js'
import type {Reply} from '../pkg/types/Reply.js'
import type {Step} from '../pkg/types/Step.js'
import type {SyncPayload} from '../pkg/types/SyncPayload.js'

export type {SyncPayload}

export interface ReceiverHooks {
  /**
   * Store the document (`change.op === "upsert"`, `change.document`) or remove it (`"delete"`). Throw to refuse:
   * the Function gets a 503 and retries. Return `{restart: true}` when this change only takes effect after a
   * restart (settings read at boot); the Function then restarts this Machine, rolling.
   */
  apply(change: SyncPayload): void | {restart?: boolean} | Promise<void | {restart?: boolean}>
  /** Purge what shows the document: its old and new routes and its cache tags. Runs after `apply`. */
  invalidate?(routes: string[], tags: string[], change: SyncPayload): void | Promise<void>
}

/** Anything that runs a GROQ query: a `@sanity/client` instance fits. */
export interface QueryClient {
  fetch(query: string, params: Record<string, unknown>): Promise<unknown>
}

export interface CatchUpOptions {
  /** The document types this app holds. */
  types: string[]
  /** Your `@sanity/client` (useCdn: false, perspective published); or the settings below. */
  client?: QueryClient
  projectId?: string
  dataset?: string
  /** Default `2025-05-01`. */
  apiVersion?: string
  /** A read token, for a private dataset. */
  token?: string
  /** Default `https://<projectId>.api.sanity.io`. */
  apiHost?: string
  /** How often to reconcile after boot (default 300). */
  intervalSeconds?: number
  /** Re-read this far behind the high-water mark (default 60): the query index can lag a write. */
  lagSeconds?: number
  pageSize?: number
  maxPages?: number
  /** A GROQ projection in braces, to shape documents like your blueprint's projection. */
  projection?: string
  /** Called after every run (and with `error` when a run could not finish). */
  onRun?(result: CatchUpResult): void
}

export interface CatchUpResult {
  applied: number
  deleted: number
  unchanged: number
  failed: {id: string; error: string}[]
  skipped: string[]
  refusedDeletions?: string
  queries: number
  mark: string | null
  error?: string
}

export interface ReceiverOptions extends ReceiverHooks {
  /** FLY_SYNC_SECRET, the same value the Function signs with. */
  secret: string
  /** Defaults to the FLY_MACHINE_ID Fly sets on every Machine. */
  machineId?: string
  /** Accepted signature age (default 300). */
  maxAgeSeconds?: number
  /** Accept draft and version ids (a preview app); default false. */
  acceptDrafts?: boolean
  /** Idempotency keys remembered for duplicate detection (default 100000). */
  rememberKeys?: number
  /** Reconcile with Sanity on boot and every interval, so a lost push is caught up (off by default). */
  catchUp?: CatchUpOptions
}

export interface Receiver {
  (request: Request): Promise<Response>
  /** Reconcile now (joins a run already under way). */
  catchUp(): Promise<CatchUpResult>
  /** The first catch-up run (started on creation), when catch-up is on. */
  ready: Promise<CatchUpResult | undefined>
  /** Stop the catch-up timer. */
  close(): void
}

type Env = {process?: {env: Record<string, string | undefined>}}

function answer(reply: Reply): Response {
  return new Response(reply.body, {status: reply.httpStatus, headers: {'content-type': 'application/json'}})
}

/** A minimal GROQ client over Sanity's HTTP query API, for apps that pass settings instead of a client. */
function httpClient(o: CatchUpOptions): QueryClient {
  const host = o.apiHost ?? `https://${o.projectId}.api.sanity.io`
  const url = `${host.replace(/\/$/, '')}/v${o.apiVersion ?? '2025-05-01'}/data/query/${o.dataset}?perspective=published`
  return {
    async fetch(query, params) {
      const headers: Record<string, string> = {'content-type': 'application/json'}
      if (o.token) headers.authorization = `Bearer ${o.token}`
      const response = await fetch(url, {method: 'POST', headers, body: JSON.stringify({query, params}), signal: AbortSignal.timeout(30_000)})
      if (!response.ok) throw new Error(`Sanity query answered HTTP ${response.status}`)
      return ((await response.json()) as {result: unknown}).result
    },
  }
}

/** Build the handler. Throws a `{class, field, message}` error for bad options. */
export function createReceiver(options: ReceiverOptions): Receiver {
  loadWasm()
  const {apply, invalidate, catchUp, machineId = (globalThis as Env).process?.env.FLY_MACHINE_ID, ...settings} = options
  const core = new SyncReceiver({...settings, machineId})
  if (catchUp) {
    const {types, lagSeconds, pageSize, maxPages, projection} = catchUp
    core.enableCatchUp(Object.fromEntries(Object.entries({types, lagSeconds, pageSize, maxPages, projection}).filter(([, v]) => v !== undefined)))
    if (!catchUp.client && !(catchUp.projectId && catchUp.dataset)) {
      throw {class: 'bad_input', field: 'catchUp.client', message: '`catchUp.client`: expected a Sanity client, or `projectId` and `dataset`, got neither'}
    }
  }

  // One change at a time: a check and its commit must not interleave with another delivery of the same document.
  let queue: Promise<unknown> = Promise.resolve()
  function serially<T>(work: () => Promise<T>): Promise<T> {
    const run = queue.then(work)
    queue = run.catch(() => undefined)
    return run
  }

  /** Run the app's hooks for one step; the core's reply. */
  async function perform(step: Step): Promise<Reply> {
    if (step.type === 'respond') return step
    let restart = false
    let failure: string | undefined
    try {
      restart = (await apply(step.change))?.restart === true
      await invalidate?.(step.change.routes.invalidate, step.change.tags, step.change)
    } catch (error) {
      failure = error instanceof Error ? error.message : String(error)
    }
    return core.finish(step.ticket, restart, failure) as Reply
  }

  const handler = (async (request: Request): Promise<Response> => {
    if (request.method !== 'POST') {
      return Response.json({error: 'the sync endpoint takes POST'}, {status: 405, headers: {allow: 'POST'}})
    }
    const body = new Uint8Array(await request.arrayBuffer())
    const headers = Object.fromEntries(request.headers)
    return answer(await serially(() => perform(core.begin(headers, body, Date.now()) as Step)))
  }) as Receiver

  const client = catchUp && (catchUp.client ?? httpClient(catchUp))
  let running: Promise<CatchUpResult> | undefined

  async function reconcile(): Promise<CatchUpResult> {
    const result: CatchUpResult = {applied: 0, deleted: 0, unchanged: 0, failed: [], skipped: [], queries: 0, mark: null}
    const tally = async (steps: Step[], kind: 'applied' | 'deleted') => {
      for (const step of steps) {
        const reply = await perform(step)
        if (reply.httpStatus >= 300) result.failed.push({id: step.type === 'apply' ? step.change.id : '?', error: JSON.parse(reply.body).error})
        else if (step.type === 'apply') result[kind] += 1
        else result.unchanged += 1
      }
    }
    try {
      let query: Query | null = core.catchUpStart() as Query
      while (query) {
        const docs = await client!.fetch(query.query, query.params)
        result.queries += 1
        // Each page is applied as one unit, between pushes, never interleaved with one.
        const page: Page = await serially(async () => {
          const p = core.catchUpPage(docs) as Page
          await tally(p.steps, 'applied')
          return p
        })
        result.skipped.push(...page.skipped)
        query = page.next
      }
      const idsQuery = core.catchUpIdsQuery() as Query
      const ids = await client!.fetch(idsQuery.query, idsQuery.params)
      result.queries += 1
      await serially(async () => {
        const d = core.catchUpDeletions(ids) as Deletions
        if (d.refused) result.refusedDeletions = d.refused
        await tally(d.steps, 'deleted')
      })
      result.mark = core.catchUpFinish(result.failed.length === 0 && result.skipped.length === 0) ?? null
    } catch (error) {
      result.error = error instanceof Error ? error.message : String(error)
      result.mark = core.catchUpFinish(false) ?? null
    }
    catchUp!.onRun?.(result)
    return result
  }

  handler.catchUp = () => {
    if (!catchUp) return Promise.reject(new Error('catch-up is not enabled (pass `catchUp` to createReceiver)'))
    running ??= reconcile().finally(() => (running = undefined))
    return running
  }
  let timer: ReturnType<typeof setInterval> | undefined
  if (catchUp) {
    timer = setInterval(() => void handler.catchUp(), (catchUp.intervalSeconds ?? 300) * 1000)
    ;(timer as {unref?: () => void}).unref?.()
  }
  handler.ready = catchUp ? handler.catchUp() : Promise.resolve(undefined)
  handler.close = () => clearInterval(timer)
  return handler
}
