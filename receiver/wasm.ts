// The receiver's wasm module (pkg/sanity_fly_sync_receiver*: the receiving side only, no engine), compiled once
// per process from the bytes inlined in pkg/sanity_fly_sync_receiver_wasm.js, so a bundle needs no sibling file.
//
// The module runs its own tasks (the I/O layer in src/wasm_receiver.rs); their turns start here, from a
// microtask, so that a trap inside the module — a defect: every input is refused before it could cause one —
// is caught here instead of escaping as an uncaught exception. Then the instance is replaced with a fresh one and
// every receiver is told (`onFault`), answers what it had in flight and starts over.
import {__wbg_reset_state, initSync, ReceiverDriver, runTasks, setScheduler, wake} from '../pkg/sanity_fly_sync_receiver.js'
import wasmBase64 from '../pkg/sanity_fly_sync_receiver_wasm.js'

let loaded = false
let generation = 0
const listeners = new Set<(why: string) => void>()

function schedule(): void {
  queueMicrotask(() => {
    try {
      guarded(runTasks)
    } catch {
      // A fault: handled by `guarded` (every receiver was told).
    }
  })
}

export function loadWasm(): void {
  if (!loaded) {
    initSync({module: Buffer.from(wasmBase64, 'base64')})
    setScheduler(schedule, wake)
    loaded = true
  }
}

/** Which instance of the module is live; a fault starts a new one. */
export function wasmGeneration(): number {
  return generation
}

/**
 * Run a call into the module. Its refusals are thrown strings (JSON) and pass through; anything else thrown is a
 * fault of the module (a trap, or what one left behind): the instance is replaced, every receiver is told, and the
 * fault is thrown on to the caller.
 */
export function guarded<T>(work: () => T): T {
  try {
    return work()
  } catch (error) {
    if (typeof error !== 'string') fault(error)
    throw error
  }
}

function fault(error: unknown): void {
  // After a trap an instance can be left half-way (its stack, its allocator, an object still borrowed), so every
  // later call may fail: a fresh instance of the same module replaces it; objects of the old one throw when used.
  __wbg_reset_state()
  setScheduler(schedule, wake)
  generation += 1
  const why = error instanceof Error ? error.message : String(error)
  for (const listener of [...listeners]) listener(why)
}

/** Be told when the module was replaced after a fault; returns the way to stop being told. */
export function onFault(listener: (why: string) => void): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

export {ReceiverDriver}
