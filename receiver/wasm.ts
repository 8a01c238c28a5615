// The receiver's wasm module (pkg/sanity_fly_sync_receiver*: the receiving side only, no engine), compiled once
// per process from the bytes inlined in pkg/sanity_fly_sync_receiver_wasm.js, so a bundle needs no sibling file.
import {__wbg_reset_state, initSync, SyncReceiver} from '../pkg/sanity_fly_sync_receiver.js'
import wasmBase64 from '../pkg/sanity_fly_sync_receiver_wasm.js'

let loaded = false
let generation = 0

export function loadWasm(): void {
  if (!loaded) {
    initSync({module: Buffer.from(wasmBase64, 'base64')})
    loaded = true
  }
}

/** Which instance of the module is live; `resetWasm` starts a new one. */
export function wasmGeneration(): number {
  return generation
}

/**
 * After a trap (`WebAssembly.RuntimeError`) an instance can be left half-way (its stack, its allocator, an
 * object still borrowed), so every later call may fail. This replaces it with a fresh instance of the same
 * module; objects of the old one then throw when used, and their owners make new ones (`wasmGeneration` tells).
 */
export function resetWasm(): void {
  __wbg_reset_state()
  generation += 1
}

export {SyncReceiver}
