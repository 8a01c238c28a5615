// The reference receiver: what a Fly app mounts at /internal/content-sync (docs/protocol.md). A Web-standard
// `Request → Response` handler, so it fits a Next.js route handler, a Remix/Astro endpoint, Hono, or node:http
// through a small adapter. Verification, duplicate and order checks are the wasm core's (src/receiver.rs); this
// file runs the app's hooks and answers.
import {loadWasm, SyncReceiver} from '../wasm.ts'
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
}

type Env = {process?: {env: Record<string, string | undefined>}}

function answer(reply: Reply): Response {
  return new Response(reply.body, {status: reply.httpStatus, headers: {'content-type': 'application/json'}})
}

/** Build the handler. Throws a `{class, field, message}` error for bad options. */
export function createReceiver(options: ReceiverOptions): (request: Request) => Promise<Response> {
  loadWasm()
  const {apply, invalidate, machineId = (globalThis as Env).process?.env.FLY_MACHINE_ID, ...settings} = options
  const core = new SyncReceiver({...settings, machineId})

  async function handle(request: Request): Promise<Response> {
    if (request.method !== 'POST') {
      return Response.json({error: 'the sync endpoint takes POST'}, {status: 405, headers: {allow: 'POST'}})
    }
    const body = new Uint8Array(await request.arrayBuffer())
    const step = core.begin(Object.fromEntries(request.headers), body, Date.now()) as Step
    if (step.type === 'respond') return answer(step)
    let restart = false
    let failure: string | undefined
    try {
      restart = (await apply(step.change))?.restart === true
      await invalidate?.(step.change.routes.invalidate, step.change.tags, step.change)
    } catch (error) {
      failure = error instanceof Error ? error.message : String(error)
    }
    return answer(core.finish(step.ticket, restart, failure) as Reply)
  }

  // One request at a time: a check and its commit must not interleave with another delivery of the same change.
  let queue: Promise<unknown> = Promise.resolve()
  return (request) => {
    const run = queue.then(() => handle(request))
    queue = run.catch(() => undefined)
    return run
  }
}
