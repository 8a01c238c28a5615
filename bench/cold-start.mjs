// Cold start: import + first real call of a bundled Function handler, each in a fresh `node` process
// (bench/cold-start-child.mjs: a real event and environment, every HTTP request answered in process), timed from
// spawn to exit. Three commands run in turn from this one process, their order rotating each round, so drift on a
// shared machine hits all alike and each round is a set of paired runs:
//   node      `node -e 0`                                      the floor: a Node process that does nothing
//   ours      dist/functions/fly-sync/index.js                 the built Function (function.ts + the wasm inlined)
//   article   out/bench/article/index.js                       the article's handler (bench/baseline.mjs, with
//                                                              @sanity/client), bundled the same way (esbuild)
// Figures: medians per command, ours − node (the goal), and ours / article per round (median).
import {spawnSync} from 'node:child_process'
import {existsSync, mkdirSync, readFileSync, writeFileSync} from 'node:fs'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {gzipSync} from 'node:zlib'
import {bundle} from '../scripts/bundle-function.mjs'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}

/** The article's handler, bundled as the Function is (scripts/bundle-function.mjs). */
export async function bundleArticle(outDir = 'out/bench/article') {
  mkdirSync(join(root, outDir), {recursive: true})
  const bytes = await bundle({entry: 'bench/baseline.mjs', outDir, commonJs: true})
  return {path: join(root, outDir, 'index.js'), bytes: bytes.length, gzip: gzipSync(bytes, {level: 9}).length}
}

/** The case both handlers get: bench/fixtures/core-case.json's event, environment and 24-Machine list. */
function writeCase(dir) {
  const c = JSON.parse(readFileSync(join(root, 'bench/fixtures/core-case.json'), 'utf8'))
  const machines = JSON.parse(c.listBody)
  const {op, previousSlug, ...document} = c.event.data
  const file = join(dir, 'cold-start-case.json')
  const clientOptions = {projectId: 'abc123', dataset: 'production', apiHost: 'https://abc123.api.sanity.io', token: 'bench-read-token'}
  writeFileSync(file, JSON.stringify({event: c.event, listBody: c.listBody, document, clientOptions, syncPath: '/internal/content-sync', firstMachine: machines[0].id}))
  return {file, env: {PATH: process.env.PATH ?? '', ...c.env}, machines: machines.length}
}

/** @param {{functionPath: string, reps?: number, workDir?: string}} o */
export async function benchColdStart({functionPath, reps = 30, workDir = join(root, 'out/bench')}) {
  if (!existsSync(functionPath)) throw new Error(`${functionPath} missing: run npm run build first`)
  mkdirSync(workDir, {recursive: true})
  const article = await bundleArticle()
  const kase = writeCase(workDir)
  const child = join(root, 'bench/cold-start-child.mjs')
  const commands = {
    node: ['-e', '0'],
    ours: [child, functionPath, kase.file],
    article: [child, article.path, kase.file],
  }
  const run = (name) => {
    const t = process.hrtime.bigint()
    const r = spawnSync(process.execPath, commands[name], {env: kase.env, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', maxBuffer: 64 << 20})
    const ms = Number(process.hrtime.bigint() - t) / 1e6
    if (r.status !== 0) throw new Error(`cold start (${name}) exited ${r.status}: ${r.stderr.trim().split('\n').slice(-3).join(' | ')}`)
    const line = r.stdout.split('\n').find((l) => l.startsWith('BENCH '))
    return {ms, inside: line ? JSON.parse(line.slice(6)) : null}
  }
  const names = Object.keys(commands)
  for (const name of names) run(name) // warm the page cache
  const samples = Object.fromEntries(names.map((n) => [n, []]))
  const inside = {ours: [], article: []}
  const ratios = []
  for (let i = 0; i < reps; i++) {
    const round = {}
    for (let k = 0; k < names.length; k++) {
      const name = names[(i + k) % names.length]
      const r = run(name)
      round[name] = r.ms
      samples[name].push(r.ms)
      if (r.inside) inside[name].push(r.inside)
    }
    ratios.push(round.ours / round.article)
  }
  const m = Object.fromEntries(names.map((n) => [n, median(samples[n])]))
  const within = (list) => ({importMs: median(list.map((x) => x.importMs)), firstCallMs: median(list.map((x) => x.callMs)), requests: list[0]?.requests ?? null})
  return {
    reps,
    machines: kase.machines,
    nodeMs: m.node,
    oursMs: m.ours,
    articleMs: m.article,
    overheadMs: m.ours - m.node,
    articleOverheadMs: m.article - m.node,
    oursOverArticle: median(ratios),
    inProcess: {ours: within(inside.ours), article: within(inside.article)},
    bundles: {ours: fileSize(functionPath), article: {bytes: article.bytes, gzip: article.gzip}},
    samples,
  }
}

function fileSize(path) {
  const bytes = readFileSync(path)
  return {bytes: bytes.length, gzip: gzipSync(bytes, {level: 9}).length}
}

/** @param {string} wasmPath */
export function wasmSize(wasmPath) {
  const bytes = readFileSync(wasmPath)
  return {raw: bytes.length, gzip: gzipSync(bytes, {level: 9}).length}
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const reps = Number(process.argv[2] ?? 30)
  const r = await benchColdStart({functionPath: join(root, 'dist/functions/fly-sync/index.js'), reps})
  delete r.samples
  console.log(JSON.stringify(r, null, 2))
}
