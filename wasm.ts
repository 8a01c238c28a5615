// The Function's wasm module (pkg/sanity_fly_sync*: the engine only; the receiver has a module of its own,
// receiver/wasm.ts), compiled once per process from the bytes of pkg/sanity_fly_sync_wasm.js: inlined as base64,
// or, in the Function's bundle, the file beside it (scripts/bundle-function.mjs). Values cross the boundary as
// bytes: JSON text in (UTF-8, encoded natively, never character by character), JSON text out; this file turns
// them into the generated types and back, nothing more.
//
// Every call into the module goes through `guarded`: the core's refusals (thrown JSON text) pass through as
// `Rejection`s; a trap (a `WebAssembly.RuntimeError`: out of memory, a defect) or what one leaves behind (a
// RefCell or wasm-bindgen borrow still held, "recursive use of an object", "null pointer passed to rust") replaces
// the instance with a fresh one of the same module (`__wbg_reset_state`, built with
// `--experimental-reset-state-function`), so the next run in this process works. The call that trapped fails
// with a `CoreFault` (class fatal); runs still holding an engine of the old instance fail the same way on their
// next call. A fresh instance starts with empty process memory (src/wasm.rs: the configuration read and the
// Machines last listed): that only costs the next run what a new process's first run costs.
import {__wbg_reset_state, forgetProcess, headersRead, initSync, maxWebhookBodyBytes, SyncEngine as CoreEngine, webhookBodyTooLarge} from './pkg/sanity_fly_sync.js'
import wasmBase64 from './pkg/sanity_fly_sync_wasm.js'
import type {WireAction} from './pkg/types/WireAction.js'
import type {Rejection} from './pkg/types/Rejection.js'

let loaded = false
/** The answer headers the core reads: the only ones handed over. */
let headersNeeded: string[] = []
/** The largest webhook body the core reads (src/event.rs `MAX_INPUT_BYTES`). */
let webhookBodyCap = 0
/** Which instance of the module is live; a fault starts a new one. */
let generation = 0

export function loadWasm(): void {
  if (!loaded) {
    const inlined = wasmBase64 as string | Uint8Array
    initSync({module: typeof inlined === 'string' ? Buffer.from(inlined, 'base64') : inlined})
    headersNeeded = headersRead().split(',')
    webhookBodyCap = maxWebhookBodyBytes()
    loaded = true
  }
}

/** Which instance of the module is live (0 for the first): a fault replaces it. For tests. */
export function wasmGeneration(): number {
  return generation
}

/**
 * A fault of the module: the call that trapped (or met what a trap left behind) fails with this; the instance was
 * replaced and the next run starts afresh. Shaped like a `Rejection` (class fatal, the webhook answers 500 so
 * Sanity retries); its message names what failed, never an input or a secret.
 */
export class CoreFault extends Error {
  readonly stage = 'fault'
  readonly class = 'fatal'
  readonly field = null
  readonly httpStatus = 500
  constructor(what: string) {
    super(`sanity-fly-sync: the sync core failed mid-call (${what}); its module was replaced with a fresh instance, the next run starts afresh`)
    this.name = 'CoreFault'
  }
}

/** What a trap leaves behind in wasm-bindgen's glue or the core's own state (src/wasm.rs's RefCell). */
const AFTER_TRAP = /recursive use of an object|null pointer passed to rust|already (mutably )?borrowed/

/** A run holding an engine of an instance that was since replaced (wasm-bindgen's check). */
const STALE = /stale object from previous Wasm instance/

/**
 * Run one call into the module. The core's refusals (thrown JSON text) come out as `Rejection`s; a trap or its
 * aftermath replaces the instance and comes out as a `CoreFault`; anything else is thrown on unchanged.
 */
function guarded<T>(work: () => T): T {
  try {
    return work()
  } catch (error) {
    if (typeof error === 'string') throw JSON.parse(error) as Rejection
    const message = error instanceof Error ? error.message : ''
    const trapped =
      error instanceof WebAssembly.RuntimeError ||
      (error instanceof RangeError && /call stack/.test(message)) ||
      (error instanceof Error && AFTER_TRAP.test(message))
    if (trapped) {
      // The instance may be half-way through a call (its stack pointer, its allocator, a borrow still held), so
      // every later call could fail: a fresh instance of the same module replaces it.
      __wbg_reset_state()
      generation += 1
      throw new CoreFault(`${error instanceof Error ? error.name : 'error'}: ${message}`)
    }
    if (error instanceof Error && STALE.test(message)) throw new CoreFault('its module was replaced during the run')
    throw error
  }
}

/** An answer's headers: a `Headers`, or `[name, value]` pairs. */
export type AnswerHeaders = {get(name: string): string | null} | [string, string][]

function headerLines(headers: AnswerHeaders): string {
  let lines = ''
  for (const name of headersNeeded) {
    const value = Array.isArray(headers) ? headers.find(([k]) => k.toLowerCase() === name)?.[1] : headers.get(name)
    if (value !== undefined && value !== null) lines += `${name}:${value}\n`
  }
  return lines
}

const utf8 = new TextEncoder()

/** The largest webhook body the core reads (bytes): read no further than this. */
export function webhookBodyLimit(): number {
  loadWasm()
  return webhookBodyCap
}

/** The core's refusal of a webhook body over `webhookBodyLimit()` (`bytes`: declared, or read so far). */
export function webhookBodyRefusal(bytes: number): Rejection {
  return JSON.parse(guarded(() => webhookBodyTooLarge(bytes))) as Rejection
}

/** One sync run (src/wasm.rs), with its values as the generated types. */
export class SyncEngine {
  private readonly core: CoreEngine
  /** The instance `core` lives in. */
  private readonly generation = generation

  private constructor(core: CoreEngine) {
    this.core = core
  }

  /**
   * `env`: the Function's environment; `eventJson`: the handler's `event` as JSON text; `clientOptionsJson`: its
   * `context.clientOptions` as JSON text (or `null`). Throws a `Rejection`, or a `CoreFault`.
   */
  static fromFunctionEvent(env: Record<string, string>, eventJson: string, clientOptionsJson: string, nowMs: number, seed: number): SyncEngine {
    const [e, ev, c] = [utf8.encode(JSON.stringify(env)), utf8.encode(eventJson), utf8.encode(clientOptionsJson)]
    return new SyncEngine(guarded(() => CoreEngine.fromFunctionEvent(e, ev, c, nowMs, seed)))
  }

  /** `headersJson`: the delivery's headers as JSON text; `body`: its raw bytes. Throws a `Rejection`, or a `CoreFault`. */
  static fromWebhook(env: Record<string, string>, headersJson: string, body: Uint8Array, nowMs: number, seed: number): SyncEngine {
    const [e, h] = [utf8.encode(JSON.stringify(env)), utf8.encode(headersJson)]
    return new SyncEngine(guarded(() => CoreEngine.fromWebhook(e, h, body, nowMs, seed)))
  }

  // Every method below throws a `CoreFault` if the module trapped (or was replaced since this run began).

  poll(nowMs: number): WireAction {
    return JSON.parse(guarded(() => this.core.poll(nowMs))) as WireAction
  }

  /** The bytes of body `index` of the last `poll`'s batches (a copy of its own). */
  body(index: number): Uint8Array<ArrayBuffer> {
    return guarded(() => this.core.body(index)) as Uint8Array<ArrayBuffer>
  }

  handleResponse(id: number, status: number, headers: AnswerHeaders, body: Uint8Array, nowMs: number): void {
    const lines = headerLines(headers)
    guarded(() => this.core.handleResponse(id, status, lines, body, nowMs))
  }

  handleFailure(id: number, timedOut: boolean, message: string, nowMs: number): void {
    guarded(() => this.core.handleFailure(id, timedOut, message, nowMs))
  }

  webhookStatus(): number {
    return guarded(() => this.core.webhookStatus())
  }

  /** Free the engine now (else when it is collected); a no-op once its instance was replaced. */
  free(): void {
    if (this.generation === generation) guarded(() => this.core.free())
  }
}

/**
 * Forget what the module remembers between runs (the configuration read, the Machines last listed): the next run
 * starts as a new process's first. For benchmarks and tests.
 */
export function forgetRuns(): void {
  loadWasm()
  guarded(forgetProcess)
}
