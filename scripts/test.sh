#!/usr/bin/env bash
# Full check. Node's test runner goes last so the final summary counts real tests
# (a bare cargo test ends on "Doc-tests ... 0 passed").
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"

# Deployed Functions run Node 24; npm scripts get it from the pinned `node` devDependency.
[[ "$(node -p 'process.versions.node.split(".")[0]')" == 24 ]] \
  || { echo "test: need Node 24, got $(node --version); run via npm test" >&2; exit 1; }

bash scripts/setup.sh
bash scripts/build-wasm.sh
node scripts/bundle-function.mjs   # dist/functions/fly-sync, what sanity.blueprint.ts deploys
node scripts/build-package.mjs     # pkg/ as the npm package (tests pack and install it)
tsc --noEmit -p .   # also checks the generated .d.ts
cargo test --all-targets
cargo check --quiet --manifest-path fuzz/Cargo.toml   # the fuzz targets compile against today's API
node --test 'tests/node/**/*.test.*'   # quoted glob: Node 24 runs a bare directory as a module
