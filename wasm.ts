// The Function's wasm module (pkg/sanity_fly_sync*: the engine only; the receiver has a module of its own,
// receiver/wasm.ts), compiled once per process from the bytes of pkg/sanity_fly_sync_wasm.js: inlined as base64,
// or, in the Function's bundle, the file beside it (scripts/bundle-function.mjs). Values cross the boundary as bytes: JSON text in (UTF-8, encoded natively, never
// character by character), JSON text out; this file turns them into the generated types and back, nothing more.
import {forgetProcess, headersRead, initSync, SyncEngine as CoreEngine} from './pkg/sanity_fly_sync.js'
import wasmBase64 from './pkg/sanity_fly_sync_wasm.js'
import type {WireAction} from './pkg/types/WireAction.js'
import type {Rejection} from './pkg/types/Rejection.js'

let loaded = false
/** The answer headers the core reads: the only ones handed over. */
let headersNeeded: string[] = []

export function loadWasm(): void {
  if (!loaded) {
    const inlined = wasmBase64 as string | Uint8Array
    initSync({module: typeof inlined === 'string' ? Buffer.from(inlined, 'base64') : inlined})
    headersNeeded = headersRead().split(',')
    loaded = true
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

/** The core's refusals are thrown as JSON text (a `Rejection`): thrown on as the object. */
function rethrow(error: unknown): never {
  throw typeof error === 'string' ? (JSON.parse(error) as Rejection) : error
}

/** One sync run (src/wasm.rs), with its values as the generated types. */
export class SyncEngine {
  private readonly core: CoreEngine

  private constructor(core: CoreEngine) {
    this.core = core
  }

  /**
   * `env`: the Function's environment; `eventJson`: the handler's `event` as JSON text; `clientOptionsJson`: its
   * `context.clientOptions` as JSON text (or `null`). Throws a `Rejection`.
   */
  static fromFunctionEvent(env: Record<string, string>, eventJson: string, clientOptionsJson: string, nowMs: number, seed: number): SyncEngine {
    try {
      const core = CoreEngine.fromFunctionEvent(utf8.encode(JSON.stringify(env)), utf8.encode(eventJson), utf8.encode(clientOptionsJson), nowMs, seed)
      return new SyncEngine(core)
    } catch (error) {
      rethrow(error)
    }
  }

  /** `headersJson`: the delivery's headers as JSON text; `body`: its raw bytes. Throws a `Rejection`. */
  static fromWebhook(env: Record<string, string>, headersJson: string, body: Uint8Array, nowMs: number, seed: number): SyncEngine {
    try {
      return new SyncEngine(CoreEngine.fromWebhook(utf8.encode(JSON.stringify(env)), utf8.encode(headersJson), body, nowMs, seed))
    } catch (error) {
      rethrow(error)
    }
  }

  poll(nowMs: number): WireAction {
    return JSON.parse(this.core.poll(nowMs)) as WireAction
  }

  /** The bytes of body `index` of the last `poll`'s batches (a copy of its own). */
  body(index: number): Uint8Array<ArrayBuffer> {
    return this.core.body(index) as Uint8Array<ArrayBuffer>
  }

  handleResponse(id: number, status: number, headers: AnswerHeaders, body: Uint8Array, nowMs: number): void {
    this.core.handleResponse(id, status, headerLines(headers), body, nowMs)
  }

  handleFailure(id: number, timedOut: boolean, message: string, nowMs: number): void {
    this.core.handleFailure(id, timedOut, message, nowMs)
  }

  webhookStatus(): number {
    return this.core.webhookStatus()
  }

  free(): void {
    this.core.free()
  }
}

/**
 * Forget what the module remembers between runs (the configuration read, the Machines last listed): the next run
 * starts as a new process's first. For benchmarks and tests.
 */
export function forgetRuns(): void {
  loadWasm()
  forgetProcess()
}
