// The npm package as a team gets it: `npm pack ./pkg` (needs `npm run build`), installed with npm into scratch
// folders outside the repository, under a chosen Node, with no Rust toolchain on PATH and no network (--offline:
// the tarball has no dependencies, so nothing may be fetched).
import {mkdtempSync, readdirSync, readFileSync, statSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {delimiter, dirname, join} from 'node:path'
import {ROOT, childEnv, run} from './run.mjs'

/** npm's own CLI script (the one running `npm test`, else the system npm's). */
export const NPM_CLI = process.env.npm_execpath?.endsWith('.js') ? process.env.npm_execpath : '/usr/lib/node_modules/npm/bin/npm-cli.js'

/** The Node that npm test runs (24, pinned) and the system Node outside the repository (20 on this machine). */
export const NODE_24 = process.execPath
export function systemNode() {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir || dir.startsWith(ROOT)) continue
    const candidate = join(dir, 'node')
    try {
      if (statSync(candidate).isFile()) return candidate
    } catch {}
  }
  throw new Error('no system node on PATH outside the repository')
}

/** A fresh folder outside the repository. */
export const scratch = (name) => mkdtempSync(join(tmpdir(), `fly-sync-${name}-`))

/**
 * An environment with only `node` (the given binary's folder) and the system's basic tools on PATH: no cargo, rustc
 * or rustup, and none of the repository's node_modules/.bin.
 */
export function bareEnv(node, extra = {}) {
  const env = childEnv(extra)
  env.PATH = [dirname(node), '/usr/bin', '/bin'].join(delimiter)
  for (const key of Object.keys(env)) if (key.startsWith('npm_') || key === 'CARGO_HOME' || key === 'RUSTUP_HOME') delete env[key]
  return env
}

/** `npm pack ./pkg` into `dir`: {path, size (bytes), files}. */
export async function packTarball(dir) {
  const r = await run(process.execPath, [NPM_CLI, 'pack', join(ROOT, 'pkg'), '--pack-destination', dir, '--json'], {timeoutMs: 60_000})
  if (r.code !== 0) throw new Error(`npm pack failed (did \`npm run build\` run?):\n${r.output}`)
  const [info] = JSON.parse(r.output.slice(r.output.indexOf('[')))
  return {path: join(dir, info.filename), size: statSync(join(dir, info.filename)).size, files: info.files.map((f) => f.path)}
}

/** `npm install <specs>` in `cwd` with `node` (offline); {code, output, ms}. */
export async function npmInstall(cwd, specs, node, env = {}) {
  const started = Date.now()
  const r = await run(node, [NPM_CLI, 'install', '--offline', '--no-audit', '--no-fund', '--no-update-notifier', ...specs], {
    cwd,
    env: bareEnv(node, env),
    timeoutMs: 120_000,
  })
  return {...r, ms: Date.now() - started}
}

/** The lines of a smoke run that are checks (`{"check": …}`), keyed by check. */
export function checks(output) {
  const found = {}
  for (const line of output.split('\n')) {
    if (!line.startsWith('{"check"')) continue
    const value = JSON.parse(line)
    found[value.check] = value
  }
  return found
}

/** Every file of a folder, relative. */
export function listFiles(dir, base = dir) {
  return readdirSync(dir, {withFileTypes: true}).flatMap((e) => (e.isDirectory() ? listFiles(join(dir, e.name), base) : [join(dir, e.name).slice(base.length + 1)]))
}

export const readJson = (path) => JSON.parse(readFileSync(path, 'utf8'))
