// The reference receiver: what a Fly app mounts at /internal/content-sync (docs/protocol.md). A Web-standard
// `Request → Response` handler, so it fits a Next.js route handler, a Remix/Astro endpoint, Hono, or node:http
// through a small adapter.
//
// Everything but the app's hooks runs in the receiver's wasm module: the sans-IO core decides (src/receiver.rs:
// verification, duplicates, order, limits; src/catch_up.rs: queries, failures, retries, the high-water mark) and
// its I/O layer does it (src/wasm_receiver.rs: bodies, responses, hook timeouts, one change per document at a time,
// the queries to Sanity, the timers). This file is the adapter to the app: it runs the hooks and the app's query
// client on what the module hands over, and starts over when the module faults (receiver/wasm.ts).
//
// Values cross as JSON text: the module bounds depth with a clear error, and what comes back is parsed here so that
// integers beyond 2^53 stay exact (BigInt) and a `__proto__` key stays an ordinary key of the object the app gets.
import {isInteger, isSafeNumber, parse as parseLossless, stringify as stringifyLossless} from 'lossless-json'
import {readFileSync} from 'node:fs'
import {guarded, loadWasm, onFault, ReceiverDriver} from './wasm.ts'
import {adapterOf, type SqliteStore} from './store.ts'
import type {RunResult} from '../pkg/types/RunResult.js'
import type {SyncPayload} from '../pkg/types/SyncPayload.js'

export type {SyncPayload}
export {sqliteStore, type SqliteStore} from './store.ts'

/** Passed to every hook: `signal` aborts when the hook's time (`hookTimeoutMs`) is up. */
export interface HookContext {
  signal: AbortSignal
}

export interface ReceiverHooks {
  /**
   * Store the document (`change.op === "upsert"`, `change.document`) or remove it (`"delete"`). Throw to refuse:
   * the Function gets a 503 and retries. Return `{restart: true}` when this change only takes effect after a
   * restart (settings read at boot); the Function then restarts this Machine, rolling. Integers in the document
   * beyond 2^53 arrive as BigInt, exact. A hook still running after `hookTimeoutMs` is answered 503 and its change
   * is not committed (a retry applies it): stop writing when `context.signal` aborts.
   */
  apply(change: SyncPayload, context: HookContext): void | {restart?: boolean} | Promise<void | {restart?: boolean}>
  /** Purge what shows the document: its old and new routes and its cache tags. Runs after `apply`. */
  invalidate?(routes: string[], tags: string[], change: SyncPayload, context: HookContext): void | Promise<void>
  /**
   * Drop what was rendered with these Sanity sync tags (the sync-tag Function's push; a Next.js app calls
   * `revalidateTag` for each, as the Next kit does). Without this hook such a push is refused (422), so the
   * Function's report names this Machine. Throw to have the Function retry.
   */
  syncTags?(tags: string[], context: HookContext): void | Promise<void>
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
  /** How long one query may take (default 30000); a timed-out query is asked again twice, then the run fails. */
  queryTimeoutMs?: number
  /** Called after every run (and with `error` when a run could not finish). */
  onRun?(result: CatchUpResult): void
}

/**
 * What a run did: `applied`, `deleted`, `unchanged`, `failed` (`{id, error}`), `skipped` (with why), `queries`,
 * `since` (the time it read changes from, `null` for everything), `mark` (the high-water mark after it), and
 * `error` when it could not finish (it is tried again at the next interval). Under LiteFS a replica's run reads
 * nothing (`replicaOf`: the primary, which catches up for every Machine).
 */
export type CatchUpResult = RunResult

export interface ReceiverOptions extends ReceiverHooks {
  /** FLY_SYNC_SECRET, the same value the Function signs with, exactly (surrounding whitespace is an error). */
  secret: string
  /** Defaults to the FLY_MACHINE_ID Fly sets on every Machine. */
  machineId?: string
  /** Accepted signature age (default 300). */
  maxAgeSeconds?: number
  /** Accept draft and version ids (a preview app); default false. */
  acceptDrafts?: boolean
  /** Idempotency keys remembered for duplicate detection (default 100000). */
  rememberKeys?: number
  /**
   * Largest push body accepted (default 40000000: Sanity's 32 MB document limit plus the payload around it).
   * A larger one gets 413 as soon as it is over, never read whole; an unsigned request gets 401 before its body is read.
   */
  maxBodyBytes?: number
  /**
   * Time each hook call (`apply`, `invalidate`) gets (default 10000). Past it the request is answered 503 and the
   * change stays uncommitted; a later change of the same document waits up to this long for the late hook to settle.
   */
  hookTimeoutMs?: number
  /** Reconcile with Sanity on boot and every interval, so a lost push is caught up (off by default). */
  catchUp?: CatchUpOptions
  /**
   * Where the receiver keeps its own state (revisions held, tombstones, remembered keys, the catch-up mark): in
   * memory by default (a restarted Machine reads everything again), or `sqliteStore(path)` on a Fly Volume (Node
   * 22.5+): a restarted Machine catches up from its mark. Write your own content through `store.db` in `apply`: it
   * commits in one transaction with the receiver's record, so a crash loses no change and applies none twice.
   */
  store?: SqliteStore
  /**
   * LiteFS: `store` is a file on the LiteFS mount. Only the primary (no `.primary` file in `dir`) applies; a
   * replica waits until the change has replicated to it (up to `replicationWaitMs`, default 3000, then 503 so
   * the Function retries), then runs `invalidate` only. Pair with the target's `fanOut: "litefs"`.
   */
  litefs?: {dir?: string; replicationWaitMs?: number}
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

// ---- Values across the boundary ----

// Every integer beyond 2^53 has at least 16 digits; text without such a run parses exactly with JSON.parse
// (which also keeps `__proto__` an own key), the rest goes through the lossless parser.
const LONG_DIGITS = /\d{16}/

function exactNumber(text: string): number | bigint {
  return isInteger(text) && !isSafeNumber(text) ? BigInt(text) : Number(text)
}

/** JSON text from the module as JS values: large integers as BigInt, `__proto__` an ordinary own key. */
function parseFromCore<T>(text: string): T {
  if (!LONG_DIGITS.test(text)) return JSON.parse(text) as T
  return parseLossless(text, null, {parseNumber: exactNumber, onDuplicateKey: ({newValue}) => newValue}) as T
}

/** A JS value (a query client's answer) as JSON text for the module; BigInt written exactly. */
function toJsonText(value: unknown, what: string): string {
  try {
    return JSON.stringify(value) ?? 'null'
  } catch (error) {
    try {
      if (error instanceof TypeError) return stringifyLossless(value) ?? 'null'
    } catch {
      // reported below
    }
    const why = error instanceof RangeError ? 'nested too deeply to serialise' : error instanceof Error ? error.message : String(error)
    throw new Unreadable(`${what} could not be passed on as JSON: ${why}`)
  }
}

class Unreadable extends Error {}

/** What a caller's code threw, as a short message (an Error's message, a string, an object's `message`, …). */
function describeThrown(value: unknown): string {
  let text: string
  if (value instanceof Error) text = value.message
  else if (typeof value === 'string') text = value
  else if (typeof (value as {message?: unknown} | null)?.message === 'string') text = (value as {message: string}).message
  else {
    try {
      text = JSON.stringify(value) ?? String(value)
    } catch {
      text = Object.prototype.toString.call(value)
    }
  }
  return text.length > 300 ? `${text.slice(0, 300)}…` : text
}

/** The HTTP status a client's error reports (`@sanity/client` sets `statusCode`). */
function statusOf(error: unknown): number | undefined {
  const e = error as {statusCode?: unknown; status?: unknown} | null
  const status = typeof e?.statusCode === 'number' ? e.statusCode : e?.status
  return typeof status === 'number' ? status : undefined
}

type HookResult = {restart: boolean} | {error: string}

/** Run one of the app's hooks: never throws or rejects; a failure is `{error}`. */
function settle(run: () => unknown, read: (value: unknown) => HookResult): Promise<HookResult> {
  return Promise.resolve()
    .then(run)
    .then(read, (error: unknown): HookResult => ({error: describeThrown(error)}))
}

function faulted(message: string): Response {
  return Response.json({error: message, field: null, class: 'retryable'}, {status: 503})
}

/** Create the handler. Throws a `{class, field, message}` error for bad options. */
export function createReceiver(options: ReceiverOptions): Receiver {
  loadWasm()
  const {apply, invalidate, syncTags, catchUp, store, litefs, machineId = (globalThis as Env).process?.env.FLY_MACHINE_ID, ...settings} = options
  const optionsText = JSON.stringify({...settings, machineId, syncTags: typeof syncTags === 'function'})
  const storeText = JSON.stringify({store: store !== undefined, litefs: litefs ?? null})
  const client = catchUp?.client
  const catchUpText = catchUp
    ? JSON.stringify({
        types: catchUp.types,
        lagSeconds: catchUp.lagSeconds,
        pageSize: catchUp.pageSize,
        maxPages: catchUp.maxPages,
        projection: catchUp.projection,
        queryTimeoutMs: catchUp.queryTimeoutMs,
        intervalSeconds: catchUp.intervalSeconds,
        client: client !== undefined && client !== null,
        projectId: catchUp.projectId,
        dataset: catchUp.dataset,
        apiVersion: catchUp.apiVersion,
        token: catchUp.token,
        apiHost: catchUp.apiHost,
      })
    : ''

  // ---- The adapter the module calls: the app's hooks and its query client ----

  const hooks = {
    apply: (text: string, signal: AbortSignal) =>
      settle(
        () => apply(parseFromCore<SyncPayload>(text), {signal}),
        (value) => ({restart: (value as {restart?: boolean} | undefined)?.restart === true}),
      ),
    invalidate:
      invalidate &&
      ((text: string, signal: AbortSignal) => {
        const change = parseFromCore<SyncPayload>(text)
        return settle(() => invalidate(change.routes.invalidate, change.tags, change, {signal}), () => ({restart: false}))
      }),
    syncTags:
      syncTags &&
      ((text: string, signal: AbortSignal) => settle(() => syncTags(JSON.parse(text) as string[], {signal}), () => ({restart: false}))),
    query:
      client &&
      ((query: string, params: string) =>
        Promise.resolve()
          .then(() => client.fetch(query, JSON.parse(params) as Record<string, unknown>))
          .then((value) => ({text: toJsonText(value, 'the query result')}))
          .catch((error: unknown) => (error instanceof Unreadable ? {unreadable: error.message} : {error: describeThrown(error), status: statusOf(error)}))),
    onRun: (text: string) => {
      try {
        catchUp?.onRun?.(parseFromCore<CatchUpResult>(text))
      } catch {
        // The app's callback: its failure is not the run's.
      }
    },
    store: store === undefined ? undefined : adapterOf(store),
    /** A file's content, or null when it does not exist (LiteFS's `.primary`). */
    readFile: (path: string): string | null => {
      try {
        return readFileSync(path, 'utf8')
      } catch (error) {
        if ((error as {code?: string}).code === 'ENOENT') return null
        throw error
      }
    },
  }

  // ---- The module's driver, and starting it over after a fault ----

  let driver!: ReceiverDriver
  let interval: ReturnType<typeof setInterval> | undefined
  let closed = false
  /** What is in flight, answered at once if the module faults. */
  const inFlight = new Set<() => void>()

  function build(): void {
    try {
      driver = new ReceiverDriver(optionsText, catchUpText, storeText, hooks)
    } catch (error) {
      throw typeof error === 'string' ? JSON.parse(error) : error
    }
  }
  build()

  /** A call into the module whose promise is answered by `onFault` if the module faults before it settles. */
  function tracked<T>(start: () => Promise<T>, onFault: () => T): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const fault = () => resolve(onFault())
      inFlight.add(fault)
      const done = () => inFlight.delete(fault)
      let promise: Promise<T>
      try {
        promise = guarded(start)
      } catch (error) {
        done()
        if (typeof error === 'string') reject(JSON.parse(error))
        else resolve(onFault())
        return
      }
      promise.then(
        (value) => (done(), resolve(value)),
        (error: unknown) => (done(), reject(error)),
      )
    })
  }

  const runFailed = (): CatchUpResult => ({
    applied: 0, deleted: 0, unchanged: 0, failed: [], skipped: [], queries: 0, since: null, mark: null,
    error: 'the receiver restarted its core after a failure; the next run reads everything again',
  })

  /** When the last run after a fault began (the module decides when to run one: `recoveryRun`). */
  let lastRecovery: number | undefined
  const stopListening = onFault((why) => {
    if (closed) return
    clearInterval(interval)
    // A transaction the old instance had open on the store ends with it: its change is applied again on retry.
    hooks.store?.rollback()
    build()
    console.error(`sanity-fly-sync receiver: the wasm core failed (${why}); started it over with empty state`)
    for (const fault of [...inFlight]) fault()
    inFlight.clear()
    interval = driver.every(tick) as ReturnType<typeof setInterval> | undefined
    // A fresh core holds nothing: the module says whether to read everything again now (catch-up on, at most once
    // per interval).
    const at = driver.recoveryRun(lastRecovery)
    if (at !== undefined) {
      lastRecovery = at
      void handler.catchUp()
    }
  })

  const handler = ((request: Request): Promise<Response> =>
    tracked(() => driver.handle(request) as Promise<Response>, () => faulted('the receiver restarted its core after a failure; retry'))) as Receiver

  handler.catchUp = () => {
    if (!catchUp) return Promise.reject(new Error('catch-up is not enabled (pass `catchUp` to createReceiver)'))
    return tracked(() => (driver.catchUp() as Promise<string>).then((text) => parseFromCore<CatchUpResult>(text)), runFailed)
  }
  const tick = () => void handler.catchUp()
  if (catchUp) interval = driver.every(tick) as ReturnType<typeof setInterval> | undefined
  handler.ready = catchUp ? handler.catchUp() : Promise.resolve(undefined)
  handler.close = () => {
    closed = true
    stopListening()
    clearInterval(interval)
    guarded(() => driver.close())
  }
  return handler
}
