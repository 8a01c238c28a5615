// Every shell command the README (and docs/*.md) shows is run by a test or a script, so the docs cannot drift.
//
// The fenced `sh`/`bash` blocks are read as a shell reads them (tests/node/support/shell-commands.mjs): each
// command — and each `$(…)` inside one — must match exactly one rule below, else the test fails naming it. A rule
// either
//   - runs the command here, as written, against loopback stand-ins and asserts its outcome (`run`; a command
//     that only sets shell state is `state`, and is replayed before the later commands of its block), or
//   - for a command that needs a real account, the network or minutes of fuzzing, runs it as far as it gets
//     offline — the Sanity CLI up to its login check, proving the installed CLI accepts the command, its
//     arguments and flags (and its oclif manifest lists them) — with the reason it cannot go further
//     (`offline`), or
//   - names the script that runs it, and checks that script really does (`elsewhere`).
// Placeholders a reader replaces (a Fly token, a secret, a port) are substituted by the rule, each with why.
//
// Each fenced block is one shell session, in order: a block's exports and variables carry to its later
// commands. Every session starts as the README says to work without a Fly account — FLY_API_URL and FLY_APP_URL
// at a loopback stand-in (tests/node/support/fly-stand-in.mjs) — with the token and secret the first block
// exports. Commands run in a scratch copy of the project (what they read: the blueprint, the built Function,
// the example events; node_modules linked), because the Sanity CLI writes into the Function's folder while it
// runs and tests/node/sanity-cli.test.mjs runs it in the repository itself. npm runs offline, HOME is empty
// (no Sanity login, no npmrc), and the Sanity API base points at a loopback recorder that must see nothing.
import {after, before, describe, test} from 'node:test'
import assert from 'node:assert/strict'
import {createServer} from 'node:http'
import {existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync, copyFileSync, cpSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {delimiter, join, matchesGlob, relative} from 'node:path'
import {fileURLToPath} from 'node:url'
import {spawnSync} from 'node:child_process'
import {shellCommands, shellBlocks} from './support/shell-commands.mjs'
import {startFlyStandIn} from './support/fly-stand-in.mjs'
import {assertOnePushPerStartedMachine} from './support/assert-sync.mjs'
import {childEnv, freePort, FLY_API_TOKEN, FLY_SYNC_SECRET, ROOT, run, start} from './support/run.mjs'

const THIS_FILE = relative(ROOT, fileURLToPath(import.meta.url))

/** The Markdown files whose shell blocks are checked: README.md and every docs/*.md, whatever they contain. */
function markdownFiles() {
  const docs = existsSync(join(ROOT, 'docs')) ? readdirSync(join(ROOT, 'docs')).filter((f) => f.endsWith('.md')).sort().map((f) => `docs/${f}`) : []
  return ['README.md', ...docs].map((file) => ({file, markdown: readFileSync(join(ROOT, file), 'utf8')}))
}

// ---------- placeholders ----------

/** What `fly tokens create deploy` prints, in the form it prints it (the engine accepts it as printed). */
const PRINTED_TOKEN = `FlyV1 ${FLY_API_TOKEN}`
const FLY_TOKEN_SUBSTITUTION = {
  from: /\$\(fly tokens create deploy -a [\w-]+\)/g,
  to: PRINTED_TOKEN,
  why: 'flyctl and a Fly account print the token; the stand-in token in the form flyctl prints it',
}
const SECRET_PLACEHOLDER = {from: /<the Fly app secret>/g, to: FLY_SYNC_SECRET, why: 'a placeholder for your own secret'}

// ---------- the session: environment, scratch project, stand-ins ----------

const session = {
  /** @type {Awaited<ReturnType<typeof startFlyStandIn>>} */ standIn: null,
  dir: '',
  home: '',
  /** The loopback recorder the Sanity API base points at: offline commands must not reach it. */
  sanityApi: {url: '', requests: []},
  close: async () => {},
}

/** The environment every command starts from (see the file comment). */
function baseEnv() {
  const env = childEnv({
    FLY_API_URL: session.standIn.url,
    FLY_APP_URL: session.standIn.url,
    FLY_API_TOKEN: PRINTED_TOKEN,
    FLY_SYNC_SECRET,
    HOME: session.home,
    XDG_CONFIG_HOME: join(session.home, '.config'),
    SANITY_INTERNAL_ENV: session.sanityApi.url,
    npm_config_offline: 'true',
    npm_config_update_notifier: 'false',
    npm_config_fund: 'false',
    npm_config_audit: 'false',
    npm_config_cache: join(session.home, '.npm'),
  })
  for (const key of Object.keys(env)) if (key.startsWith('SANITY_') && key !== 'SANITY_INTERNAL_ENV') delete env[key]
  return env
}

/** The project as far as the commands read it, in a scratch folder. */
function scratchProject() {
  const dir = mkdtempSync(join(tmpdir(), 'fly-sync-readme-'))
  for (const file of ['sanity.blueprint.ts', 'package.json', 'package-lock.json']) copyFileSync(join(ROOT, file), join(dir, file))
  // sanity.blueprint.ts builds its resources with the package's blueprint helper.
  cpSync(join(ROOT, 'blueprint'), join(dir, 'blueprint'), {recursive: true})
  mkdirSync(join(dir, 'dist/functions/fly-sync'), {recursive: true})
  for (const file of ['index.js', 'sanity_fly_sync_bg.wasm']) copyFileSync(join(ROOT, 'dist/functions/fly-sync', file), join(dir, 'dist/functions/fly-sync', file))
  cpSync(join(ROOT, 'examples'), join(dir, 'examples'), {recursive: true})
  symlinkSync(join(ROOT, 'node_modules'), join(dir, 'node_modules'), 'dir')
  return dir
}

const packageJson = () => JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'))

/** Apply a rule's substitutions to a command's text. */
const substitute = (text, subs = []) => subs.reduce((t, s) => t.replace(s.from, s.to), text)

/** Run `script` in bash in the scratch project (or `cwd`); `{code, output}`. */
function bash(script, {env = baseEnv(), cwd = session.dir, timeoutMs = 120_000} = {}) {
  return run('bash', ['-c', script], {env, cwd, timeoutMs})
}

/** The state commands seen so far in the current block, replayed before each later command. */
let prefix = []
const scriptFor = (text) => [...prefix, text].join('\n')

// ---------- what the Sanity CLI offers, from its oclif manifest ----------

const MANIFEST = JSON.parse(readFileSync(join(ROOT, 'node_modules/@sanity/runtime-cli/oclif.manifest.json'), 'utf8'))

/**
 * `npx sanity-run <topic> <command> args… --flags` against the manifest: the command exists, takes at most
 * that many arguments, and every flag is one of its flags. Returns the command id.
 */
function assertInManifest(normalized) {
  const words = normalized.replace(/"[^"]*"|'[^']*'/g, 'ARG').split(' ')
  assert.equal(words.slice(0, 2).join(' '), 'npx sanity-run')
  const rest = words.slice(2)
  let id = null
  for (let n = rest.length; n > 0 && !id; n--) {
    const candidate = rest.slice(0, n).join(':')
    if (MANIFEST.commands[candidate]) id = candidate
  }
  assert.ok(id, `no such sanity-run command: ${normalized}`)
  const command = MANIFEST.commands[id]
  const after = rest.slice(id.split(':').length)
  const flags = after.filter((w) => w.startsWith('-'))
  const args = after.filter((w) => !w.startsWith('-'))
  for (const flag of flags) {
    const name = flag.replace(/^--?/, '').split('=')[0]
    const known = Object.entries(command.flags ?? {}).some(([key, f]) => key === name || f.char === name)
    assert.ok(known, `${id}: no flag ${flag} in the installed CLI (${Object.keys(command.flags ?? {}).join(', ')})`)
  }
  assert.ok(args.length <= Object.keys(command.args ?? {}).length, `${id}: ${args.length} arguments, takes ${Object.keys(command.args ?? {}).join(', ')}`)
  return id
}

/** Run a Sanity CLI command that needs a login as far as it goes offline: to the login check, nothing sent. */
async function untilLogin(cmd, subs) {
  const id = assertInManifest(cmd.normalized)
  const before = session.sanityApi.requests.length
  const r = await bash(scriptFor(substitute(cmd.text, subs)))
  assert.equal(r.code, 2, `${cmd.normalized}\n${r.output}`)
  assert.match(r.output, /No API token found/, `${id}: accepted by the installed CLI, stopped at the login check\n${r.output}`)
  assert.doesNotMatch(r.output, /Nonexistent flag|Unexpected argument|Missing \d+ required arg/)
  assert.equal(session.sanityApi.requests.length, before, 'nothing reached the Sanity API')
}

/** A state command: it runs, and afterwards each variable holds `value` (exported or not, as said). */
function sets(vars) {
  return async (cmd, subs) => {
    const text = substitute(cmd.text, subs)
    for (const [name, {value, exported}] of Object.entries(vars)) {
      const read = exported ? `printenv ${name}` : `printf '%s\\n' "$${name}"`
      const r = await bash(`set -e\n${scriptFor(text)}\n${read}`)
      assert.equal(r.code, 0, r.output)
      assert.equal(r.output.trimEnd(), typeof value === 'function' ? value() : value, `${name} after: ${cmd.normalized}`)
    }
    prefix.push(text)
  }
}

/** The report a `functions test` prints as its Response (the last JSON object in its output). */
function reportIn(output) {
  const done = [...output.matchAll(/\{"at":"[^"]+","action":"done","report":(\{.*\})\}\s*$/gm)].at(-1)
  assert.ok(done, `no report in:\n${output}`)
  return JSON.parse(done[1])
}

/** Run a `functions test` command of the block from a clean stand-in: it succeeds; its output and report. */
async function functionsTest(cmd) {
  session.standIn.reset()
  const r = await bash(scriptFor(cmd.text))
  assert.equal(r.code, 0, r.output)
  return {output: r.output, report: reportIn(r.output)}
}

/** fuzz/Cargo.toml's fuzz targets. */
const fuzzTargets = () => [...readFileSync(join(ROOT, 'fuzz/Cargo.toml'), 'utf8').matchAll(/^name = "(\w+)"/gm)].map((m) => m[1]).filter((n) => n !== 'sanity-fly-sync-fuzz')

/** Run scripts/fuzz.sh as written up to its cargo-fuzz check (cargo-fuzz hidden): proves its arguments are accepted. */
async function fuzzUntilCargoFuzz(cmd) {
  const cargoHome = mkdtempSync(join(session.home, 'cargo-'))
  const path = (process.env.PATH ?? '').split(delimiter).filter((d) => d && !existsSync(join(d, 'cargo-fuzz')))
  const env = {...baseEnv(), CARGO_HOME: cargoHome, PATH: path.join(delimiter)}
  const r = await bash(cmd.text, {cwd: ROOT, env})
  assert.equal(r.code, 2, r.output)
  assert.match(r.output, /fuzz: cargo-fuzz is missing: cargo install cargo-fuzz/, r.output)
  assert.doesNotMatch(r.output, /usage:/)
  // The targets it names are fuzz targets.
  for (const t of cmd.normalized.split(' ').filter((w) => /^[a-z_]+$/.test(w))) {
    assert.ok(fuzzTargets().includes(t), `${t}: not a fuzz target (${fuzzTargets().join(', ')})`)
  }
}

/**
 * @typedef {object} Rule
 * @property {string} id
 * @property {RegExp} match  against the normalized command
 * @property {'run' | 'state' | 'offline' | 'elsewhere'} kind
 * @property {string} [why]  for `offline` and `elsewhere`: why not here / where
 * @property {{from: RegExp, to: string, why: string}[]} [subs]
 * @property {(cmd: import('./support/shell-commands.mjs').ShellCommand, subs?: any[]) => Promise<void>} check
 * @property {boolean} [background]  a server: started here, stopped at the end of its block
 */

/** @type {Rule[]} */
const RULES = [
  // ---- set-up ----
  {
    id: 'npm ci',
    match: /^npm ci$/,
    kind: 'elsewhere',
    why: '.ci/run runs it on a clean clone; here it would reinstall node_modules under the running suite',
    async check() {
      assert.match(readFileSync(join(ROOT, '.ci/run'), 'utf8'), /^npm ci$/m)
      assert.ok(existsSync(join(ROOT, 'package-lock.json')), 'npm ci needs the lockfile')
    },
  },
  {
    id: 'npm test',
    match: /^npm test$/,
    kind: 'elsewhere',
    why: '.ci/run runs it; this test runs inside it',
    async check() {
      assert.match(readFileSync(join(ROOT, '.ci/run'), 'utf8'), /^npm test\b/m)
      const pkg = packageJson()
      assert.equal(pkg.scripts.test, 'bash scripts/test.sh')
      const glob = /^node --test '([^']+)'/m.exec(readFileSync(join(ROOT, 'scripts/test.sh'), 'utf8'))
      assert.ok(glob, 'scripts/test.sh runs the Node tests')
      assert.ok(matchesGlob(THIS_FILE, glob[1]), `${THIS_FILE} is among ${glob[1]}`)
    },
  },
  {
    id: 'npm run build',
    match: /^npm run build$/,
    kind: 'elsewhere',
    why: "scripts/test.sh runs each step of package.json's build before the tests; rebuilding here would replace dist/ under the other tests",
    async check() {
      const pkg = packageJson()
      const testSh = readFileSync(join(ROOT, 'scripts/test.sh'), 'utf8').split('\n').map((l) => l.replace(/#.*/, '').trim())
      const steps = pkg.scripts.build.split('&&').map((s) => s.trim())
      assert.ok(steps.length >= 3, pkg.scripts.build)
      for (const step of steps) assert.ok(testSh.includes(step), `scripts/test.sh runs \`${step}\``)
      for (const out of ['pkg/sanity_fly_sync.js', 'dist/functions/fly-sync/index.js', 'dist/receiver/index.js']) {
        assert.ok(statSync(join(ROOT, out)).size > 0, `${out} built`)
      }
    },
  },
  {
    id: 'npm run pack',
    match: /^npm run pack$/,
    kind: 'elsewhere',
    why: 'tests/node/package.test.mjs runs it (after the build npm test ran) and installs the tarball it makes',
    async check() {
      assert.match(packageJson().scripts.pack, /npm pack \.\/pkg/)
      assert.match(readFileSync(join(ROOT, 'tests/node/package.test.mjs'), 'utf8'), /NPM_CLI, 'run', 'pack'/)
    },
  },
  {
    id: 'npm install the tarball',
    match: /^npm install \.\.\/sanity-fly-sync\/out\/sanity-fly-sync-[\d.]+\.tgz$/,
    kind: 'elsewhere',
    why: 'tests/node/package.test.mjs and blueprint-project.test.mjs install that tarball in scratch projects (offline, Node 20 and 24)',
    async check(cmd) {
      assert.ok(cmd.normalized.endsWith(`/out/sanity-fly-sync-${packageJson().version}.tgz`), 'the version the build packs')
      for (const file of ['package.test.mjs', 'blueprint-project.test.mjs']) assert.match(readFileSync(join(ROOT, 'tests/node', file), 'utf8'), /npmInstall\(/)
    },
  },
  {
    id: 'npm run simulate',
    match: /^npm run simulate$/,
    kind: 'run',
    why: 'its build half is `npm run build` (above); its simulation half, local/simulate.mjs, runs here on 2 Machines and 2 events (the full session is tests/node/simulation.test.mjs)',
    async check() {
      const pkg = packageJson()
      assert.equal(pkg.scripts.simulate, 'npm run build --silent && node local/simulate.mjs')
      const editorial = JSON.parse(readFileSync(join(ROOT, 'local/scenarios/editorial.json'), 'utf8'))
      const scenario = join(session.home, 'scenario.json')
      writeFileSync(scenario, JSON.stringify({...editorial, steps: editorial.steps.slice(0, 2)}))
      const out = join(session.home, 'timeline.html')
      const r = await run(process.execPath, ['local/simulate.mjs', '--machines', '2', '--regions', 'ord', '--scenario', scenario, '--out', out, '--json'], {cwd: ROOT, env: childEnv(), timeoutMs: 120_000})
      assert.equal(r.code, 0, r.output)
      const result = JSON.parse(r.output.slice(r.output.indexOf('{')))
      assert.equal(result.ok, true)
      assert.deepEqual(result.steps.map((s) => [s.label, s.freshMachines, s.servingMachines]), [['create article', 2, 2], ['edit title', 2, 2]])
      assert.match(readFileSync(out, 'utf8'), /<html/i)
    },
  },

  // ---- try the Function locally ----
  {
    id: 'export the Fly token and the secret',
    match: /^export FLY_API_TOKEN="\$\(fly tokens create deploy -a my-fly-app\)" FLY_SYNC_SECRET='<the Fly app secret>'$/,
    kind: 'state',
    subs: [FLY_TOKEN_SUBSTITUTION, SECRET_PLACEHOLDER],
    check: sets({FLY_API_TOKEN: {value: PRINTED_TOKEN, exported: true}, FLY_SYNC_SECRET: {value: FLY_SYNC_SECRET, exported: true}}),
  },
  {
    id: 'fly tokens create',
    match: /^fly tokens create deploy -a [\w-]+$/,
    kind: 'offline',
    why: 'needs flyctl (not a dependency: nothing installed to check it against) and a Fly account; the commands around it run with the token in the form it prints (`FlyV1 fm2_…`)',
    async check(cmd) {
      assert.ok(cmd.inside, 'only ever inside a command whose rule substitutes it')
      assert.match(`$(${cmd.normalized})`, new RegExp(FLY_TOKEN_SUBSTITUTION.from.source))
    },
  },
  {
    id: 'dry run',
    match: /^export FLY_SYNC_DRY_RUN=true$/,
    kind: 'state',
    check: sets({FLY_SYNC_DRY_RUN: {value: 'true', exported: true}}),
  },
  {
    id: 'functions test --file',
    match: /^npx sanity-run functions test fly-sync --file examples\/events\/article\.json$/,
    kind: 'run',
    async check(cmd) {
      const {output, report} = await functionsTest(cmd)
      assert.match(output, /Function execution succeeded/)
      // The block exported FLY_SYNC_DRY_RUN=true: listed and planned, nothing sent that changes anything.
      assert.equal(report.dryRun, true)
      assert.equal(report.status, 'planned')
      assert.deepEqual([report.change.id, report.change.rev], ['article-42', 'rev-1'])
      assert.deepEqual(session.standIn.requests.map((q) => `${q.method} ${q.url}`), ['GET /v1/apps/my-fly-app/machines'])
      assert.equal(session.standIn.requests[0].headers.authorization, PRINTED_TOKEN, 'the token as the block exported it')
    },
  },
  {
    id: 'functions test --event update',
    match: /^npx sanity-run functions test fly-sync --event update --file-before examples\/events\/article-before\.json --file-after examples\/events\/article-after\.json$/,
    kind: 'run',
    async check(cmd) {
      const {report} = await functionsTest(cmd)
      assert.equal(report.dryRun, true)
      assert.deepEqual([report.change.operation, report.change.rev], ['update', 'rev-2'])
      assert.deepEqual(session.standIn.syncs(), [], 'a dry run pushes nothing')
    },
  },
  {
    id: 'functions test the sync-tag Function',
    match: /^npx sanity-run functions test fly-sync-tags --file examples\/events\/sync-tags\.json$/,
    kind: 'run',
    async check(cmd) {
      const {output, report} = await functionsTest(cmd)
      assert.equal(report.dryRun, true)
      assert.equal(report.status, 'planned')
      assert.equal(report.syncTags.count, JSON.parse(readFileSync(join(ROOT, 'examples/events/sync-tags.json'), 'utf8')).syncTags.length)
      assert.deepEqual(report.targets[0].machines.filter((m) => m.sync === 'would_sync').length, 2)
      assert.match(output, /"action":"sync-tags-done","called":true/, 'done is called, after the run')
      assert.deepEqual(session.standIn.syncs(), [], 'a dry run pushes nothing')
    },
  },
  {
    id: 'functions dev',
    match: /^npx sanity-run functions dev --host 127\.0\.0\.1 --port \d+$/,
    kind: 'run',
    background: true,
    subs: [{from: /--port \d+/, to: '--port PORT', why: 'a free port: a fixed one may be taken on the machine running the tests'}],
    async check(cmd, subs) {
      const port = await freePort()
      session.devPort = port
      const text = substitute(cmd.text, subs).replace('PORT', String(port))
      const dev = start('bash', ['-c', scriptFor(`exec ${text}`)], {env: baseEnv(), cwd: session.dir})
      session.background.push(dev)
      await dev.waitFor(new RegExp(`Server is running on http://127\\.0\\.0\\.1:${port}`), 60_000)
    },
  },
  {
    id: 'DOC from the example',
    match: /^DOC="\$\(cat examples\/events\/article\.json\)"$/,
    kind: 'state',
    check: sets({DOC: {value: () => readFileSync(join(ROOT, 'examples/events/article.json'), 'utf8').trimEnd(), exported: false}}),
  },
  {
    id: 'cat an example event',
    match: /^cat examples\/events\/[\w-]+\.json$/,
    kind: 'run',
    async check(cmd) {
      const r = await bash(cmd.text)
      assert.equal(r.code, 0, r.output)
      assert.equal(typeof JSON.parse(r.output)._id, 'string')
    },
  },
  {
    id: 'curl /invoke a delete',
    match: /^curl -s 127\.0\.0\.1:\d+\/invoke /,
    kind: 'run',
    subs: [{from: /127\.0\.0\.1:\d+/, to: '127.0.0.1:PORT', why: 'the dev server above, on its free port'}],
    async check(cmd, subs) {
      assert.ok(session.devPort, 'the dev server of this block is running')
      session.standIn.reset()
      const r = await bash(scriptFor(substitute(cmd.text, subs).replace('PORT', String(session.devPort))))
      assert.equal(r.code, 0, r.output)
      const answer = JSON.parse(r.output)
      assert.equal(answer.error, undefined, answer.logs)
      assert.match(answer.logs, /"action":"done".*"ok":true/)
      const [body] = await assertOnePushPerStartedMachine(session.standIn)
      assert.deepEqual([body.op, body.operation, body.id, body.rev], ['delete', 'delete', 'article-42', 'rev-1'])
      assert.deepEqual(body.routes.previous, ['/blog/hello'])
    },
  },

  // ---- deploy: needs a Sanity login (and, for the token, a Fly account) ----
  ...[
    ['blueprints init', /^npx sanity-run blueprints init$/],
    ['functions env add FLY_API_TOKEN', /^npx sanity-run functions env add fly-sync FLY_API_TOKEN "\$\(fly tokens create deploy -a my-fly-app\)"$/],
    ['functions env add FLY_SYNC_SECRET', /^npx sanity-run functions env add fly-sync FLY_SYNC_SECRET "\$\(openssl rand -hex 32\)"$/],
    ['blueprints deploy', /^npx sanity-run blueprints deploy$/],
    ['functions logs --watch', /^npx sanity-run functions logs fly-sync --watch$/],
  ].map(([id, match]) => ({
    id,
    match,
    kind: 'offline',
    why: 'needs a Sanity login and a project (and deploys or reads a real one); run to the CLI\'s login check, which comes after it has parsed the command',
    subs: [FLY_TOKEN_SUBSTITUTION],
    check: (cmd, subs) => untilLogin(cmd, subs),
  })),
  {
    id: 'openssl rand',
    match: /^openssl rand -hex 32$/,
    kind: 'run',
    async check(cmd) {
      const r = await bash(cmd.text)
      assert.equal(r.code, 0, r.output)
      assert.match(r.output, /^[0-9a-f]{64}\n$/, 'a 64-character secret (FLY_SYNC_SECRET needs at least 16)')
    },
  },

  // ---- docs/fuzzing.md ----
  {
    id: 'cargo install cargo-fuzz',
    match: /^cargo install cargo-fuzz$/,
    kind: 'offline',
    why: 'downloads and compiles cargo-fuzz from crates.io; scripts/fuzz.sh names this exact command when cargo-fuzz is missing',
    async check() {
      assert.match(readFileSync(join(ROOT, 'scripts/fuzz.sh'), 'utf8'), /cargo-fuzz is missing: cargo install cargo-fuzz/)
    },
  },
  {
    id: 'scripts/fuzz.sh',
    match: /^(FUZZ_SANITIZER=\w+ )?scripts\/fuzz\.sh( \d+)?( [a-z_]+)*$/,
    kind: 'offline',
    why: 'fuzzing runs for minutes per target and needs cargo-fuzz (docs/fuzzing.md: not part of CI); run as written up to its cargo-fuzz check, after it has accepted its arguments',
    check: (cmd) => fuzzUntilCargoFuzz(cmd),
  },
  {
    id: 'cd fuzz',
    match: /^cd fuzz$/,
    kind: 'state',
    async check(cmd) {
      const r = await bash(`set -e\n${cmd.text}\npwd`, {cwd: ROOT})
      assert.equal(r.code, 0, r.output)
      assert.equal(r.output.trim(), join(ROOT, 'fuzz'))
    },
  },
  {
    id: 'cargo fuzz run / tmin a crash',
    match: /^cargo \+stable fuzz (run|tmin) -s none <target> artifacts\/<target>\/crash-…$/,
    kind: 'offline',
    why: 'a template: <target> and the crash file come from a fuzzing run that crashed; needs cargo-fuzz',
    async check() {
      assert.ok(fuzzTargets().length >= 5, `fuzz targets: ${fuzzTargets()}`)
      assert.ok(existsSync(join(ROOT, 'fuzz/Cargo.toml')))
    },
  },
]

/** The rules matching a command (exactly one is expected). */
const rulesFor = (cmd) => RULES.filter((r) => r.match.test(cmd.normalized))

describe('README.md and docs/*.md: every shell command is run or checked', () => {
  const files = markdownFiles()
  const commands = shellCommands(files)

  test('the shell blocks parse as shell (bash -n) and hold commands', () => {
    assert.ok(commands.length >= 20, `found ${commands.length} commands`)
    for (const {file, markdown} of files) {
      for (const block of shellBlocks(markdown)) {
        const r = spawnSync('bash', ['-n'], {input: block.body, encoding: 'utf8'})
        assert.equal(r.status, 0, `${file}:${block.line}: not valid shell:\n${r.stderr}`)
      }
    }
  })

  test('every command has exactly one rule; every rule has a command', () => {
    const uncovered = commands.filter((c) => rulesFor(c).length === 0).map((c) => `${c.file}:${c.line}: ${c.normalized}`)
    assert.deepEqual(uncovered, [], 'commands shown without a test or script behind them: add a rule to tests/node/readme-commands.test.mjs')
    const ambiguous = commands.filter((c) => rulesFor(c).length > 1).map((c) => `${c.file}:${c.line}: ${rulesFor(c).map((r) => r.id).join(' / ')}`)
    assert.deepEqual(ambiguous, [])
    const stale = RULES.filter((r) => !commands.some((c) => r.match.test(c.normalized))).map((r) => r.id)
    assert.deepEqual(stale, [], 'rules for commands no longer shown: remove them')
    for (const r of RULES) if (r.kind === 'offline' || r.kind === 'elsewhere') assert.ok(r.why, `${r.id}: says why it does not run here`)
  })

  describe('each block, command by command', () => {
    before(async () => {
      session.standIn = await startFlyStandIn()
      session.home = mkdtempSync(join(tmpdir(), 'fly-sync-readme-home-'))
      session.dir = scratchProject()
      session.background = []
      const api = createServer((req, res) => {
        session.sanityApi.requests.push(`${req.method} ${req.url}`)
        res.writeHead(599).end()
      })
      await new Promise((resolve) => api.listen(0, '127.0.0.1', resolve))
      session.sanityApi.url = `http://127.0.0.1:${api.address().port}/`
      session.close = async () => {
        api.closeAllConnections()
        await new Promise((resolve) => api.close(resolve))
      }
    })
    after(async () => {
      for (const p of session.background ?? []) await p.stop()
      await session.standIn?.close()
      await session.close()
      for (const dir of [session.dir, session.home]) if (dir) rmSync(dir, {recursive: true, force: true})
    })

    const blocks = [...new Set(commands.map((c) => `${c.file}#${c.block}`))]
    for (const key of blocks) {
      const inBlock = commands.filter((c) => `${c.file}#${c.block}` === key)
      test(`${inBlock[0].file}:${inBlock[0].line}: ${inBlock.filter((c) => !c.inside).map((c) => c.normalized.split(' ').slice(0, 4).join(' ')).join('; ')}`, async (t) => {
        prefix = []
        session.devPort = null
        const started = session.background.length
        try {
          for (const cmd of inBlock) {
            const [rule] = rulesFor(cmd)
            assert.ok(rule, `${cmd.file}:${cmd.line}: no rule for ${cmd.normalized}`)
            await t.test(`${rule.kind}: ${cmd.normalized.slice(0, 100)}`, () => rule.check(cmd, rule.subs))
          }
        } finally {
          for (const p of session.background.splice(started)) await p.stop()
        }
        assert.deepEqual(session.sanityApi.requests, [], 'nothing reached the Sanity API')
      })
    }
  })
})

test('the shell splitter: continuations, quotes across lines, comments, && and substitutions', async () => {
  const {splitCommands} = await import('./support/shell-commands.mjs')
  const text = [
    'npm ci && npm run simulate    # a comment with "quotes" and \'apostrophes\'',
    'export A="$(fly tokens create deploy -a app)" B=\'x y\'',
    'npx x --a 1 \\',
    "  --b 2   # trailing",
    "curl -d '{\"a\":",
    "  1}' && echo \"$(openssl rand -hex 32)\"",
    'cd fuzz; ls',
  ].join('\n')
  const commands = splitCommands(text)
  assert.deepEqual(commands.map((c) => [c.line, c.text.replace(/\s+/g, ' ')]), [
    [0, 'npm ci'],
    [0, 'npm run simulate'],
    [1, 'export A="$(fly tokens create deploy -a app)" B=\'x y\''],
    [2, 'npx x --a 1 --b 2'],
    [4, 'curl -d \'{"a": 1}\''],
    [5, 'echo "$(openssl rand -hex 32)"'],
    [6, 'cd fuzz'],
    [6, 'ls'],
  ])
  assert.deepEqual(commands[2].substitutions.map((s) => s.text), ['fly tokens create deploy -a app'])
  assert.deepEqual(commands[5].substitutions.map((s) => s.text), ['openssl rand -hex 32'])
  assert.throws(() => splitCommands("export X=<the app's secret>"), /unterminated ' quote/)
})
