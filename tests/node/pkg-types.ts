// Type-only: checks the wasm-bindgen .d.ts under strict settings (needs `npm run build` first).
import type * as wasm from '../../pkg/sanity_fly_sync.js';

export const versionIsString: (typeof wasm.version) extends () => string ? true : never = true;
import type * as receiver from '../../pkg/sanity_fly_sync_receiver.js';

export const receiverVersionIsString: (typeof receiver.version) extends () => string ? true : never = true;
