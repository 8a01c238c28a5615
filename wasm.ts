// The wasm core, compiled once per process from the bytes inlined in pkg/sanity_fly_sync_wasm.js, so a bundle
// needs no sibling .wasm file. Shared by the Function (function.ts) and the receiver (receiver/).
import {initSync, SyncEngine, SyncReceiver} from './pkg/sanity_fly_sync.js'
import wasmBase64 from './pkg/sanity_fly_sync_wasm.js'

let loaded = false

export function loadWasm(): void {
  if (!loaded) {
    initSync({module: Buffer.from(wasmBase64, 'base64')})
    loaded = true
  }
}

export {SyncEngine, SyncReceiver}
