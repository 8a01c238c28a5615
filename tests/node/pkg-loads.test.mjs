// Loads the built ESM package (npm run build) the way the Function shim will.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

import * as wasm from '../../pkg/sanity_fly_sync.js';

// The [package] version in Cargo.toml, without pulling in a TOML parser.
function cargoVersion() {
  const toml = readFileSync(new URL('../../Cargo.toml', import.meta.url), 'utf8');
  const pkg = toml.split(/^\[/m).find((s) => s.startsWith('package]'));
  const m = pkg?.match(/^version\s*=\s*"([^"]+)"/m);
  assert.ok(m, 'no version in [package] of Cargo.toml');
  return m[1];
}

test('version() returns the crate version from Cargo.toml', () => {
  assert.equal(typeof wasm.version, 'function');
  assert.equal(wasm.version(), cargoVersion());
});
