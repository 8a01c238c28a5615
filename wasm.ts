// The Function's wasm module (pkg/sanity_fly_sync*: the engine only; the receiver has a module of its own,
// receiver/wasm.ts), compiled once per process from the bytes inlined in pkg/sanity_fly_sync_wasm.js, so a bundle
// needs no sibling .wasm file. Values cross the boundary as JSON text; this file turns them into the generated
// types and back, nothing more.
import {initSync, SyncEngine as CoreEngine} from './pkg/sanity_fly_sync.js'
import wasmBase64 from './pkg/sanity_fly_sync_wasm.js'
import type {Action} from './pkg/types/Action.js'
import type {Rejection} from './pkg/types/Rejection.js'

let loaded = false

export function loadWasm(): void {
  if (!loaded) {
    initSync({module: Buffer.from(wasmBase64, 'base64')})
    loaded = true
  }
}

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
      return new SyncEngine(CoreEngine.fromFunctionEvent(JSON.stringify(env), eventJson, clientOptionsJson, nowMs, seed))
    } catch (error) {
      rethrow(error)
    }
  }

  /** `headersJson`: the delivery's headers as JSON text; `body`: its raw bytes. Throws a `Rejection`. */
  static fromWebhook(env: Record<string, string>, headersJson: string, body: Uint8Array, nowMs: number, seed: number): SyncEngine {
    try {
      return new SyncEngine(CoreEngine.fromWebhook(JSON.stringify(env), headersJson, body, nowMs, seed))
    } catch (error) {
      rethrow(error)
    }
  }

  poll(nowMs: number): Action {
    return JSON.parse(this.core.poll(nowMs)) as Action
  }

  handleResponse(id: number, status: number, headers: [string, string][], body: string, nowMs: number): void {
    this.core.handleResponse(id, status, JSON.stringify(headers), body, nowMs)
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
