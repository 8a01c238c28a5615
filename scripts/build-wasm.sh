#!/usr/bin/env bash
# Release wasm → ESM glue in pkg/ → size-optimised with the npm binaryen.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# Explicit path: Debian's older binaryen (108) corrupts wasm-bindgen 0.2.130 output.
WASM_OPT=node_modules/.bin/wasm-opt
[[ -x $WASM_OPT ]] || { echo "build: $WASM_OPT missing; run npm ci" >&2; exit 1; }

cargo build --release --target wasm32-unknown-unknown --lib
rm -rf pkg
wasm-bindgen --target experimental-nodejs-module --out-dir pkg \
  target/wasm32-unknown-unknown/release/sanity_fly_sync.wasm

# TypeScript types of everything that crosses the boundary, generated from the Rust types (ts-rs → pkg/types).
cargo test --quiet --lib export_bindings >/dev/null

out=pkg/sanity_fly_sync_bg.wasm
before=$(wc -c <"$out")
# Feature flags come from the target-features section rustc emits, so none are passed here.
"$WASM_OPT" -Oz "$out" -o "$out"
echo "build: $out raw $before -> $(wc -c <"$out") bytes, gzip -9 $(gzip -9c "$out" | wc -c) bytes"
