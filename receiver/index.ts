// The reference receiver: what a Fly app mounts at /internal/content-sync (docs/protocol.md). A Web-standard
// `Request → Response` handler, so it fits a Next.js route handler, a Remix/Astro endpoint, Hono, or node:http
// through a small adapter. Verification, duplicate and order checks, the limits and the catch-up queries are the
// wasm core's (src/receiver.rs, src/catch_up.rs); this file reads bodies, runs the app's hooks under their
// timeouts, one change per document at a time, and runs the queries and the timer.
//
// Values cross into the core as JSON text and come back as JSON text (src/wasm.rs): the core bounds depth with a
// clear error, and what comes back is parsed here so that integers beyond 2^53 stay exact (BigInt) and a
// `__proto__` key stays an ordinary key of the object the app gets.
import {isInteger, isSafeNumber, parse as parseLossless, stringify as stringifyLossless} from 'lossless-json'
import {loadWasm, resetWasm, SyncReceiver, wasmGeneration} from './wasm.ts'
import type {Deletions} from '../pkg/types/Deletions.js'
import type {HandlerLimits} from '../pkg/types/HandlerLimits.js'
import type {Page} from '../pkg/types/Page.js'
import type {Query} from '../pkg/types/Query.js'
import type {Reply} from '../pkg/types/Reply.js'
import type {Step} from '../pkg/types/Step.js'
import type {SyncPayload} from '../pkg/types/SyncPayload.js'

export type {SyncPayload}

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
  /** How long one query may take before the run fails and waits for the next interval (default 30000). */
  queryTimeoutMs?: number
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

const noop = () => {}

// ---- Values across the boundary ----

// Every integer beyond 2^53 has at least 16 digits; text without such a run parses exactly with JSON.parse
// (which also keeps `__proto__` an own key), the rest goes through the lossless parser.
const LONG_DIGITS = /\d{16}/

function exactNumber(text: string): number | bigint {
  return isInteger(text) && !isSafeNumber(text) ? BigInt(text) : Number(text)
}

/** JSON text from the core as JS values: large integers as BigInt, `__proto__` an ordinary own key. */
function parseFromCore<T>(text: string): T {
  if (!LONG_DIGITS.test(text)) return JSON.parse(text) as T
  return parseLossless(text, null, {parseNumber: exactNumber, onDuplicateKey: ({newValue}) => newValue}) as T
}

/** A JS value (a query client's answer) as JSON text for the core; BigInt written exactly. */
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
    throw new Error(`${what} could not be passed on as JSON: ${why}`)
  }
}

/** A JSON answer of the core's shape (`{error, class}`), for refusals the handler makes itself (503, 405). */
function handlerReply(httpStatus: number, message: string, klass: 'retryable' | 'bad_input' = 'retryable'): Reply {
  return {httpStatus, body: JSON.stringify({error: message, field: null, class: klass})}
}

function answer(reply: Reply, extra: Record<string, string> = {}): Response {
  return new Response(reply.body, {status: reply.httpStatus, headers: {'content-type': 'application/json', ...extra}})
}

// ---- Time and order ----

type Outcome<T> = {ok: true; value: T} | {ok: false; error: unknown} | {ok: false; timedOut: true}

/** `work`'s outcome, or `timedOut` once `ms` have passed (`work` keeps running; its late result is ignored). */
function within<T>(work: Promise<T>, ms: number): Promise<Outcome<T>> {
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<Outcome<T>>((resolve) => {
    timer = setTimeout(() => resolve({ok: false, timedOut: true}), ms)
  })
  const settled = work.then(
    (value): Outcome<T> => ({ok: true, value}),
    (error): Outcome<T> => ({ok: false, error}),
  )
  return Promise.race([settled, timeout]).finally(() => clearTimeout(timer))
}

/** What a holder gives back: its result now, and when the documents are free again (a late hook may still run). */
type Held<T> = {result: T; released: Promise<unknown>}

/**
 * One change per document at a time, in arrival order; changes of other documents run alongside. `work` runs
 * once every earlier holder of any of `ids` has released them, or not at all (`undefined`) when that takes longer
 * than `waitMs`. A later holder waits for everyone before it, so a waiter that gives up never lets it overtake.
 */
function documentLocks() {
  const tails = new Map<string, Promise<unknown>>()
  return async function exclusive<T>(ids: readonly string[], waitMs: number, work: () => Promise<Held<T>>): Promise<T | undefined> {
    const keys = [...new Set(ids)]
    const before = Promise.all(keys.map((id) => tails.get(id)))
    let release: (released: Promise<unknown>) => void = noop
    const released = new Promise<unknown>((resolve) => (release = resolve))
    const tail = Promise.all([before, released]).then(noop, noop)
    for (const id of keys) tails.set(id, tail)
    void tail.then(() => keys.forEach((id) => tails.get(id) === tail && tails.delete(id)))
    let held: Held<T> | undefined
    try {
      const waited = await within(before, waitMs)
      if (!waited.ok) return undefined
      held = await work()
      return held.result
    } finally {
      release(held ? held.released.then(noop, noop) : Promise.resolve())
    }
  }
}

/** Create the handler. Throws a `{class, field, message}` error for bad options. */
export function createReceiver(options: ReceiverOptions): Receiver {
  loadWasm()
  const {apply, invalidate, syncTags, catchUp, machineId = (globalThis as Env).process?.env.FLY_MACHINE_ID, ...settings} = options
  const optionsText = JSON.stringify({...settings, machineId, syncTags: typeof syncTags === 'function'})
  const catchUpText = catchUp &&
    JSON.stringify({
      types: catchUp.types,
      lagSeconds: catchUp.lagSeconds,
      pageSize: catchUp.pageSize,
      maxPages: catchUp.maxPages,
      projection: catchUp.projection,
      queryTimeoutMs: catchUp.queryTimeoutMs,
    })

  // ---- The core, and starting it over after a trap ----

  let core!: SyncReceiver
  let builtFor = -1
  /** A fresh core. Bad options throw the core's `SyncError` object. */
  function build(): void {
    try {
      const fresh = new SyncReceiver(optionsText)
      if (catchUpText) fresh.enableCatchUp(catchUpText)
      core = fresh
      builtFor = wasmGeneration()
    } catch (error) {
      throw typeof error === 'string' ? JSON.parse(error) : error
    }
  }
  build()
  if (catchUp && !catchUp.client && !(catchUp.projectId && catchUp.dataset)) {
    throw {class: 'bad_input', field: 'catchUp.client', message: '`catchUp.client`: expected a Sanity client, or `projectId` and `dataset`, got neither'}
  }
  const limits = JSON.parse(core.limits()) as HandlerLimits

  class CoreFault extends Error {}
  /**
   * Call the core. Its refusals are thrown strings (JSON); anything else thrown is a fault of the module (a trap,
   * or what one left behind): the module is replaced, this receiver starts over as after a restart of the process
   * (empty state; with catch-up, a run reads everything again as at boot) and the caller answers 503 (retryable).
   */
  function call<T>(work: (c: SyncReceiver) => T, from: 'push' | 'catch-up' = 'push'): T {
    if (builtFor !== wasmGeneration()) startOver('the wasm module was replaced after a failure elsewhere in this process', from)
    try {
      return work(core)
    } catch (error) {
      if (typeof error === 'string') throw error
      if (builtFor === wasmGeneration()) resetWasm()
      startOver(`the wasm core failed (${error instanceof Error ? error.message : String(error)})`, from)
      throw new CoreFault('the receiver restarted its core after a failure; retry')
    }
  }

  /** A fresh core with empty state; with catch-up on, a run reads everything again as at boot. */
  function startOver(why: string, from: 'push' | 'catch-up'): void {
    build()
    console.error(`sanity-fly-sync receiver: ${why}; started it over with empty state`)
    // From inside a run, that run fails and the next interval starts one: no loop of runs on a lasting fault.
    if (catchUp && from === 'push') setTimeout(() => void handler.catchUp(), 0).unref?.()
  }

  /** A core call whose refusal is an answer: `{refused}` holds the JSON the core threw. */
  function attempt<T>(work: (c: SyncReceiver) => T): {value: T} | {refused: string} {
    try {
      return {value: call(work)}
    } catch (error) {
      if (typeof error === 'string') return {refused: error}
      throw error
    }
  }

  // ---- The app's hooks ----

  /** Run one hook under its timeout. */
  async function hook<T>(run: (context: HookContext) => T | Promise<T>): Promise<{outcome: Outcome<T>; settled: Promise<unknown>}> {
    const controller = new AbortController()
    const work = Promise.resolve().then(() => run({signal: controller.signal}))
    const outcome = await within(work, limits.hookTimeoutMs)
    if ('timedOut' in outcome) controller.abort(new Error(`the hook did not settle within ${limits.hookTimeoutMs} ms`))
    return {outcome, settled: work.then(noop, noop)}
  }

  type HookCall = ['apply' | 'invalidate' | 'syncTags', (context: HookContext) => unknown]
  /** The app's hooks a step runs, in order: a change's `apply` then `invalidate`; sync tags' `syncTags`. */
  function hooksFor(step: Exclude<Step, {type: 'respond'}>): HookCall[] {
    if (step.type === 'tags') return [['syncTags', (context) => syncTags!(step.syncTags, context)]]
    const change = step.change
    const calls: HookCall[] = [['apply', (context) => apply(change, context)]]
    if (invalidate) calls.push(['invalidate', (context) => invalidate(change.routes.invalidate, change.tags, change, context)])
    return calls
  }

  /** Run the app's hooks for one step; the core's reply, when the document is free again, and whether a hook timed out. */
  async function perform(step: Step, generation: number): Promise<Held<Reply> & {timedOut?: boolean}> {
    if (step.type === 'respond') return {result: step, released: Promise.resolve()}
    let restart = false
    let failure: string | undefined
    let late: Promise<unknown> | undefined
    for (const [which, run] of hooksFor(step)) {
      const {outcome, settled} = await hook(run)
      if (outcome.ok) {
        if (which === 'apply') restart = (outcome.value as {restart?: boolean} | undefined)?.restart === true
        continue
      }
      if ('timedOut' in outcome) {
        failure = `the ${which} hook did not settle within ${limits.hookTimeoutMs} ms`
        // The document stays held until the late hook settles, or one more timeout: a retry then applies it.
        late = within(settled, limits.hookTimeoutMs)
      } else {
        failure = outcome.error instanceof Error ? outcome.error.message : String(outcome.error)
      }
      break
    }
    const released = late ?? Promise.resolve()
    if (generation !== wasmGeneration()) {
      return {result: handlerReply(503, 'the receiver restarted its core while the change was applied; retry'), released}
    }
    const reply = parseFromCore<Reply>(call((c) => c.finish(step.ticket, restart, failure)))
    return {result: reply, released, timedOut: late !== undefined}
  }

  const exclusive = documentLocks()

  /** Read the body through the core's intake: refused as soon as it is over the cap, and unless its MAC matches. */
  async function readBody(request: Request, headers: string): Promise<{body: Uint8Array} | {refused: string}> {
    const opened = attempt((c) => c.intake(headers))
    if ('refused' in opened) {
      await request.body?.cancel().catch(noop)
      return opened
    }
    const intake = opened.value
    const chunks: Uint8Array[] = []
    let size = 0
    try {
      const reader = request.body?.getReader()
      for (;;) {
        const next = reader ? await reader.read() : {done: true as const, value: undefined}
        if (next.done) break
        const refused = call(() => intake.push(next.value))
        if (refused !== undefined) {
          await reader?.cancel().catch(noop)
          return {refused}
        }
        chunks.push(next.value)
        size += next.value.length
      }
      const refused = call(() => intake.finish())
      if (refused !== undefined) return {refused}
    } finally {
      if (builtFor === wasmGeneration()) intake.free()
    }
    return {body: concat(chunks, size)}
  }

  async function receive(request: Request): Promise<Response> {
    if (request.method !== 'POST') {
      await request.body?.cancel().catch(noop)
      return answer(handlerReply(405, 'the sync endpoint takes POST', 'bad_input'), {allow: 'POST'})
    }
    const headers = JSON.stringify(Object.fromEntries(request.headers))
    const read = await readBody(request, headers)
    if ('refused' in read) return answer(JSON.parse(read.refused) as Reply)
    const verified = attempt((c) => c.verify(headers, read.body, Date.now()))
    if ('refused' in verified) return answer(JSON.parse(verified.refused) as Reply)
    const push = verified.value
    const generation = wasmGeneration()
    const reply = await exclusive([push.id], limits.hookTimeoutMs, async () => {
      if (generation !== wasmGeneration()) return {result: handlerReply(503, 'the receiver restarted its core; retry'), released: Promise.resolve()}
      const step = parseFromCore<Step>(call((c) => c.beginVerified(push)))
      return perform(step, generation)
    })
    if (reply === undefined) {
      if (generation === wasmGeneration()) push.free()
      return answer(handlerReply(503, `another change of ${push.id} is still being applied; retry`))
    }
    return answer(reply)
  }

  const handler = (async (request: Request): Promise<Response> => {
    try {
      return await receive(request)
    } catch (error) {
      if (error instanceof CoreFault) return answer(handlerReply(503, error.message))
      throw error
    }
  }) as Receiver

  // ---- Catch-up ----

  type TextAnswer = {text: string; enveloped: boolean}
  const client = catchUp && (catchUp.client ?? null)

  /** Run a query within its time and size; the answer as JSON text (the HTTP answer itself with the built-in client). */
  async function runQuery(query: Query): Promise<TextAnswer> {
    const work: Promise<TextAnswer> = client
      ? client.fetch(query.query, query.params as Record<string, unknown>).then((v) => ({text: toJsonText(v, 'the query result'), enveloped: false}))
      : fetchText(catchUp!, query)
    const outcome = await within(work, query.timeoutMs)
    if ('timedOut' in outcome) throw new Error(`the query to Sanity did not answer within ${query.timeoutMs} ms`)
    // The client is the app's: it may reject with anything. Only the core's refusals are JSON strings.
    if (!outcome.ok) throw new Error(`the query to Sanity failed: ${describeThrown(outcome.error)}`)
    // At least one byte per UTF-16 unit: this catches what is plainly over; the core checks the exact size.
    if (outcome.value.text.length > query.maxBytes) throw tooLarge(query)
    return outcome.value
  }

  /** The steps the core staged (a page, or tombstones), applied as one unit while their documents are held. */
  async function applyStaged(ids: string[], kind: 'applied' | 'deleted', result: CatchUpResult): Promise<void> {
    const generation = wasmGeneration()
    const done = await exclusive(ids, limits.hookTimeoutMs, async () => {
      const steps = parseFromCore<Step[]>(call((c) => c.catchUpBegin(), 'catch-up'))
      const lingering: Promise<unknown>[] = []
      let stopped: string | undefined
      for (const step of steps) {
        if (stopped !== undefined && step.type === 'apply') {
          // Not started: the rest of the unit waits for the next run (its mark stays).
          call((c) => c.finish(step.ticket, false, stopped), 'catch-up')
          result.failed.push({id: step.change.id, error: stopped})
          continue
        }
        const {result: reply, released, timedOut} = await perform(step, generation)
        lingering.push(released)
        if (timedOut) stopped = 'not applied: a hook of this run timed out before it'
        if (reply.httpStatus >= 300) {
          const error = (JSON.parse(reply.body) as {error: string}).error
          result.failed.push({id: step.type === 'apply' ? step.change.id : '?', error})
        } else if (step.type === 'apply') result[kind] += 1
        else result.unchanged += 1
      }
      return {result: true, released: Promise.all(lingering)}
    })
    if (!done) throw new Error(`documents of this page are still being applied by a push (waited ${limits.hookTimeoutMs} ms); the run is tried again`)
  }

  async function reconcile(): Promise<CatchUpResult> {
    const result: CatchUpResult = {applied: 0, deleted: 0, unchanged: 0, failed: [], skipped: [], queries: 0, mark: null}
    try {
      let query: Query | null = parseFromCore<Query>(call((c) => c.catchUpStart(), 'catch-up'))
      while (query) {
        const {text, enveloped} = await runQuery(query)
        result.queries += 1
        const page = parseFromCore<Page>(call((c) => c.catchUpPage(text, enveloped, Date.now()), 'catch-up'))
        result.skipped.push(...page.skipped)
        await applyStaged(page.ids, 'applied', result)
        query = page.next
      }
      const idsQuery = parseFromCore<Query>(call((c) => c.catchUpIdsQuery(Date.now()), 'catch-up'))
      const {text, enveloped} = await runQuery(idsQuery)
      result.queries += 1
      const deletions = parseFromCore<Deletions>(call((c) => c.catchUpDeletions(text, enveloped, Date.now()), 'catch-up'))
      if (deletions.refused) result.refusedDeletions = deletions.refused
      await applyStaged(deletions.ids, 'deleted', result)
      result.mark = call((c) => c.catchUpFinish(result.failed.length === 0), 'catch-up') ?? null
    } catch (error) {
      result.error = typeof error === 'string' ? (JSON.parse(error) as {message: string}).message : error instanceof Error ? error.message : String(error)
      try {
        result.mark = call((c) => c.catchUpFinish(false), 'catch-up') ?? null
      } catch {
        result.mark = null
      }
    }
    try {
      catchUp!.onRun?.(result)
    } catch {
      // The app's callback: its failure is not the run's.
    }
    return result
  }

  let running: Promise<CatchUpResult> | undefined
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

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const all = new Uint8Array(size)
  let at = 0
  for (const chunk of chunks) {
    all.set(chunk, at)
    at += chunk.length
  }
  return all
}

function tooLarge(query: Query): Error {
  return new Error(`the query answer is over ${query.maxBytes} bytes, the most a page is read at once: lower catchUp.pageSize`)
}

/** Sanity's HTTP query API, for apps that pass settings instead of a client: the answer's text, unparsed. */
async function fetchText(o: CatchUpOptions, query: Query): Promise<{text: string; enveloped: boolean}> {
  const host = o.apiHost ?? `https://${o.projectId}.api.sanity.io`
  const url = `${host.replace(/\/$/, '')}/v${o.apiVersion ?? '2025-05-01'}/data/query/${o.dataset}?perspective=published`
  const headers: Record<string, string> = {'content-type': 'application/json'}
  if (o.token) headers.authorization = `Bearer ${o.token}`
  const body = JSON.stringify({query: query.query, params: query.params})
  const response = await fetch(url, {method: 'POST', headers, body, signal: AbortSignal.timeout(query.timeoutMs)})
  if (!response.ok) {
    await response.body?.cancel().catch(noop)
    throw new Error(`Sanity query answered HTTP ${response.status}`)
  }
  // Read up to the bound, never more.
  const chunks: Uint8Array[] = []
  let size = 0
  const reader = response.body?.getReader()
  for (;;) {
    const next = reader ? await reader.read() : {done: true as const, value: undefined}
    if (next.done) break
    size += next.value.length
    if (size > query.maxBytes) {
      await reader?.cancel().catch(noop)
      throw tooLarge(query)
    }
    chunks.push(next.value)
  }
  return {text: new TextDecoder().decode(concat(chunks, size)), enveloped: true}
}

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
