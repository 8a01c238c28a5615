// sanity-fly-sync: the Sanity Function handler and the GROQ-webhook entry.
//
// This file is an executor with no policy: the wasm core decides what to send, when to retry, when to restart
// and what the outcome means (including the webhook's HTTP status); this file only runs `fetch` and timers,
// feeds every answer back, and logs one JSON line per batch of requests (a fan-out is one batch) and one for
// the report. Secrets never reach a log line: batches are logged through the core's redacted `log`
// description, never with their headers.
import type {DocumentEventHandler, FunctionPayload, SyncTagInvalidateCallback} from '@sanity/functions'
import {CoreFault, loadWasm, SyncEngine, webhookBodyLimit, webhookBodyRefusal} from './wasm.ts'
import type {Batch} from './pkg/types/Batch.js'
import type {Report} from './pkg/types/Report.js'
import type {Rejection} from './pkg/types/Rejection.js'

export type {Report, Rejection}
export type Env = Record<string, string | undefined>
export type LogLine = Record<string, unknown>
export type Logger = (line: LogLine) => void

const jsonLines: Logger = (line) => console.log(JSON.stringify({at: new Date().toISOString(), ...line}))

/**
 * Seed for the core's retry jitter: it only spreads concurrent runs' retries apart, so `Math.random` serves (the
 * first `crypto.getRandomValues` of a process costs ~5 ms of every cold start, loading Web Crypto).
 */
function seed(): number {
  return Math.floor(Math.random() * 2 ** 53)
}

type Feed = (engine: SyncEngine) => void
type Outcome = {status: number; headers: Headers; body: Uint8Array} | {timedOut: boolean; message: string}
type Sending = {url: string; init: RequestInit; timeoutMs: number; reuseMs: number}

async function fetchOutcome({url, init, timeoutMs}: Sending): Promise<Outcome> {
  try {
    const response = await fetch(url, {...init, signal: AbortSignal.timeout(timeoutMs)})
    return {status: response.status, headers: response.headers, body: new Uint8Array(await response.arrayBuffer())}
  } catch (error) {
    const timedOut = error instanceof Error && error.name === 'TimeoutError'
    return {timedOut, message: error instanceof Error ? `${error.name}: ${error.message}` : String(error)}
  }
}

// A GET the engine marks reusable (`reuseMs` > 0: a Machine list while only content is pushed) may be answered
// by an identical one: joined while in flight if that one left at most `reuseMs` ago, or taken from one answered at
// most `reuseMs` ago. A GET with `reuseMs` 0 (the fresh list before a roll, reads of a restarting Machine) always
// goes out on its own: the core, not this file, decides what may be shared.
const sharedGets = new Map<string, {at: number; outcome: Promise<Outcome>}>()
const recentGets = new Map<string, {at: number; outcome: Outcome}>()

function feedOf(id: number, o: Outcome): Feed {
  return 'status' in o
    ? (engine) => engine.handleResponse(id, o.status, o.headers, o.body, Date.now())
    : (engine) => engine.handleFailure(id, o.timedOut, o.message, Date.now())
}

/** Send one request; resolve (never reject) to a function that feeds the outcome to the engine. */
async function send(id: number, sending: Sending): Promise<Feed> {
  if (sending.init.method !== 'GET' || sending.reuseMs <= 0) return feedOf(id, await fetchOutcome(sending))
  const key = JSON.stringify([sending.url, sending.init.headers])
  const fresh = (at: number) => Date.now() - at <= sending.reuseMs
  const recent = recentGets.get(key)
  if (recent && fresh(recent.at)) return feedOf(id, recent.outcome)
  let shared = sharedGets.get(key)
  if (!shared || !fresh(shared.at)) {
    const entry = {at: Date.now(), outcome: fetchOutcome(sending)}
    sharedGets.set(key, entry)
    void entry.outcome.finally(() => sharedGets.get(key) === entry && sharedGets.delete(key))
    shared = entry
  }
  const o = await shared.outcome
  if ('status' in o && o.status === 200) {
    if (recentGets.size > 256) recentGets.clear()
    recentGets.set(key, {at: Date.now(), outcome: o})
  }
  return feedOf(id, o)
}

/** Request `i` of `batch`: its headers, with the batch's varying header set to its own value. */
function sendingOf(batch: Batch, i: number, body: Uint8Array<ArrayBuffer> | undefined): Sending {
  const headers = batch.vary ? [...batch.headers, [batch.vary.name, batch.vary.values[i]] as [string, string]] : batch.headers
  return {url: batch.url, init: {method: batch.method, headers, body}, timeoutMs: batch.timeoutMs, reuseMs: batch.reuseMs}
}

function sleep(ms: number): {promise: Promise<void>; cancel: () => void} {
  let timer: ReturnType<typeof setTimeout> | undefined
  const promise = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, ms))))
  return {promise, cancel: () => clearTimeout(timer)}
}

/** Run the engine's loop to the end: parallel sends, waits, every answer fed back. */
export async function runEngine(engine: SyncEngine, log: Logger = jsonLines): Promise<Report> {
  try {
    return await loop(engine, log)
  } catch (error) {
    // The module trapped mid-run (wasm.ts replaced it): this run is over, the next one starts afresh.
    if (error instanceof CoreFault) log({action: 'fault', class: error.class, message: error.message})
    throw error
  }
}

async function loop(engine: SyncEngine, log: Logger): Promise<Report> {
  const inFlight = new Map<number, Promise<void>>()
  const ready: Feed[] = []
  for (;;) {
    for (const feed of ready.splice(0)) feed(engine)
    const action = engine.poll(Date.now())
    if (action.type === 'done') {
      log({action: 'done', report: action.report})
      return action.report
    }
    if (action.type === 'send') {
      for (const batch of action.batches) {
        log({action: 'send', ids: batch.ids, ...batch.log})
        const body = batch.body === null ? undefined : engine.body(batch.body)
        batch.ids.forEach((id, i) => {
          const done = send(id, sendingOf(batch, i, body)).then((feed) => {
            inFlight.delete(id)
            ready.push(feed)
          })
          inFlight.set(id, done)
        })
      }
      continue
    }
    // Wait for the first answer or the engine's next instant, whichever comes first.
    const timer = sleep(action.untilMs - Date.now())
    await Promise.race([timer.promise, ...inFlight.values()])
    timer.cancel()
  }
}

/** The variables the core reads: `FLY_*` and `SANITY_*` (a target's `tokenEnv` must name one, src/config.rs). */
const CORE_VARIABLE = /^(FLY|SANITY)_/

/** The part of an environment the core reads (what crosses into it). */
export function coreEnv(source: Env): Record<string, string> {
  const vars: Record<string, string> = {}
  for (const name in source) {
    const value = source[name]
    if (CORE_VARIABLE.test(name) && typeof value === 'string') vars[name] = value
  }
  return vars
}

/**
 * `JSON.stringify(value)`, what crosses into the core (the event, the context's client options). The core refuses
 * nesting beyond 128 levels; a value so deep that JavaScript cannot even serialise it (a few thousand levels
 * overflow its stack) is refused here, the same way.
 */
function jsonText(field: string, value: unknown): string {
  try {
    return JSON.stringify(value) ?? 'null'
  } catch (error) {
    const got = `one JSON.stringify refused (${error instanceof Error ? error.name : 'error'})`
    const message = `\`${field}\`: expected JSON nested at most 128 levels deep, got ${got}`
    throw {stage: 'input', class: 'bad_input', field, message, httpStatus: 400} satisfies Rejection
  }
}

/**
 * Hand a roll the core left unfinished to the Function it names (`report.resumeWith`), through @sanity/functions'
 * `invoke`: deployed, it publishes to that pubsub Function's topic; under Sanity's CLI (`context.local`) it runs it
 * through the CLI's `context.invoke`. Either way this run does not wait for it. Where it cannot, the intent
 * recorded on the Machines waits for the next run.
 */
async function continueRoll(report: Report, context: Invocation['context'] | undefined) {
  const next = report.resumeWith
  if (!next) return
  try {
    // Loaded here, not at start: it carries an AWS client most runs never need (a chunk beside the bundle).
    const {invoke} = await import('@sanity/functions')
    await invoke(next.function, {event: {data: next.data}, context: context as FunctionPayload['context']})
    jsonLines({action: 'resume', function: next.function, invoked: true})
  } catch (error) {
    const why = error instanceof Error ? error.message : String(error)
    jsonLines({action: 'resume', function: next.function, invoked: false, why: `${why}: the next run finishes the roll`})
  }
}

/** Start the core's run for a Function invocation, or throw the core's refusal (logged) as an Error. */
function startRun(context: {clientOptions?: unknown} | undefined, event: unknown): SyncEngine {
  loadWasm()
  try {
    // The event and the context's client options (project, dataset, token for the dependents query) cross as
    // JSON text: the core bounds their size and depth (a JS object tree converted field by field could exhaust
    // the module's stack).
    const clientOptions = jsonText('context.clientOptions', context?.clientOptions ?? null)
    return SyncEngine.fromFunctionEvent(coreEnv(process.env), jsonText('event', event), clientOptions, Date.now(), seed())
  } catch (error) {
    if (error instanceof CoreFault) {
      jsonLines({action: 'fault', class: error.class, message: error.message})
      throw error
    }
    const e = error as Rejection
    jsonLines({action: 'rejected', ...e})
    throw new Error(`sanity-fly-sync: ${e.stage} error: ${e.message}`)
  }
}

/** Sanity records a run that did not fully succeed as failed: throw, with the report attached. */
function settle(report: Report): Report {
  if (!report.ok) {
    throw Object.assign(new Error(`sanity-fly-sync: sync ${report.status} (the report above says where and why)`), {report})
  }
  return report
}

/** What a Function handler gets: the sync-tag Function's invocations also carry `done`. */
type Invocation = Parameters<DocumentEventHandler>[0] & {done?: SyncTagInvalidateCallback}

/**
 * The Sanity Function, for all three of its resources (one bundle): a document's change (the document Function),
 * a roll to finish (the resume Function), or the sync tags Sanity invalidated (the sync-tag Function). Throws when
 * the sync did not fully succeed, so Sanity records a failure. The report is also returned: production ignores it,
 * `functions test` prints it as the Response. A sync-tag invocation's `done` is called once the run is over, on
 * every path, failures included: Sanity's clients waiting on live content wait for it.
 */
export async function handler({context, event, done}: Invocation): Promise<Report> {
  try {
    const report = await runEngine(startRun(context, event))
    await continueRoll(report, context)
    return settle(report)
  } finally {
    // `done` is the sync-tag event's (the local CLI hands a stub to every handler): an event with `syncTags` and
    // no document `_id`, as the core reads it.
    const data = event?.data as Record<string, unknown> | undefined
    if (done !== undefined && data && typeof data === 'object' && 'syncTags' in data && !('_id' in data)) await signalDone(done, data.syncTags)
  }
}

/** Call `done` with the event's tags as given; its own failure is logged, never thrown over the run's outcome. */
async function signalDone(done: SyncTagInvalidateCallback, tags: unknown): Promise<void> {
  const given = Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string') : []
  try {
    const response = await done(given)
    jsonLines({action: 'sync-tags-done', called: true, tags: given.length, status: response?.status ?? null})
  } catch (error) {
    jsonLines({action: 'sync-tags-done', called: true, tags: given.length, error: error instanceof Error ? error.message : String(error)})
  }
}

/**
 * A request's body, read chunk by chunk and no further than `cap` bytes: past it (as declared by
 * `content-length`, or as read so far when that is missing or wrong) reading stops, the rest is cancelled, and
 * the answer is how many bytes refused it.
 */
async function readBody(request: Request, cap: number): Promise<Uint8Array | {tooLarge: number}> {
  const declared = Number(request.headers.get('content-length') ?? Number.NaN)
  if (declared > cap) {
    await request.body?.cancel().catch(() => {})
    return {tooLarge: declared}
  }
  if (request.body === null) return new Uint8Array(0)
  const reader = request.body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const {done, value} = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > cap) {
      await reader.cancel().catch(() => {})
      return {tooLarge: size}
    }
    chunks.push(value)
  }
  const body = new Uint8Array(size)
  let at = 0
  for (const chunk of chunks) {
    body.set(chunk, at)
    at += chunk.byteLength
  }
  return body
}

/** A refusal or a fault as the webhook's answer: its status, and JSON naming the problem. */
function refusal(e: {message: string; field?: string | null; stage: string; httpStatus: number}): Response {
  return Response.json({error: e.message, field: e.field ?? null, stage: e.stage}, {status: e.httpStatus})
}

/** A Web-standard handler for GROQ-powered webhooks: mount it in any runtime (Node, Deno, Bun, workers). */
export function createWebhookHandler(env: Env, log: Logger = jsonLines): (request: Request) => Promise<Response> {
  const vars = coreEnv(env)
  return async (request) => {
    loadWasm()
    // Read no further than the largest body the core accepts (413 past it): a huge body never fills memory.
    const body = await readBody(request, webhookBodyLimit())
    if (!(body instanceof Uint8Array)) {
      const e = webhookBodyRefusal(body.tooLarge)
      log({action: 'rejected', ...e})
      return refusal(e)
    }
    // Headers cross as JSON text and the body as raw bytes (the signature covers exactly those bytes).
    const headers = JSON.stringify(Object.fromEntries(request.headers))
    let engine: SyncEngine
    try {
      engine = SyncEngine.fromWebhook(vars, headers, body, Date.now(), seed())
    } catch (error) {
      if (error instanceof CoreFault) {
        log({action: 'fault', class: error.class, message: error.message})
        return refusal(error)
      }
      const e = error as Rejection
      log({action: 'rejected', ...e})
      return refusal(e)
    }
    let report: Report
    try {
      report = await runEngine(engine, log)
    } catch (error) {
      // The module trapped mid-run: 500, so Sanity retries the delivery (on a fresh instance).
      if (error instanceof CoreFault) return refusal(error)
      throw error
    }
    return Response.json(report, {status: engine.webhookStatus()})
  }
}

/** The webhook entry with this process's environment. */
export const handleWebhook = (request: Request): Promise<Response> => createWebhookHandler(process.env)(request)
