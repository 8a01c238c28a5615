#!/usr/bin/env bash
# Idempotent toolchain setup for the wasm build (second run: well under a second).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

rustup target add wasm32-unknown-unknown

# The CLI must match the wasm-bindgen crate in Cargo.lock exactly, or its glue won't load.
want="$(cargo pkgid wasm-bindgen | sed 's/.*@//')"
have="$(wasm-bindgen --version 2>/dev/null | awk '{print $2}' || true)"
if [[ "$have" != "$want" ]]; then
  echo "setup: installing wasm-bindgen-cli $want (found: ${have:-none}); takes ~2 min cold"
  # No --locked: the CLI's own lock file pins a webpki-roots version this registry lacks.
  cargo install wasm-bindgen-cli --version "$want"
fi
echo "setup: wasm-bindgen $(wasm-bindgen --version | awk '{print $2}'), node $(node --version)"
