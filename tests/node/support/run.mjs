// Child processes and ports for the Node tests: every process runs in its own process group with a hard
// deadline, so a hung CLI is killed (with whatever it spawned) instead of hanging the suite.
import {spawn} from 'node:child_process'
import {createServer} from 'node:net'
import {delimiter, dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '../../..')
export const SANITY_RUN = join(ROOT, 'node_modules/@sanity/runtime-cli/bin/run.js')

export const FLY_API_TOKEN = 'fm2_stand-in-token'
export const FLY_SYNC_SECRET = 'stand-in-sync-secret-0123456789'
export const SANITY_WEBHOOK_SECRET = 'stand-in-webhook-secret-0123'

/**
 * The environment for a child: the shell's, minus anything the core reads (so a developer's own FLY_* can't
 * leak in), plus `extra`. The CLI runs the Function with plain `node` from PATH, so this Node comes first.
 */
export function childEnv(extra = {}) {
  const env = Object.fromEntries(
    Object.entries(process.env).filter(([k]) => !k.startsWith('FLY_') && k !== 'SANITY_WEBHOOK_SECRET'),
  )
  env.PATH = `${dirname(process.execPath)}${delimiter}${env.PATH ?? ''}`
  env.NO_COLOR = '1'
  return {...env, ...extra}
}

/** The Function's env for a stand-in at `url` (the blueprint supplies FLY_APP_NAME, routes and the rest). */
export function standInEnv(url, extra = {}) {
  return childEnv({FLY_API_URL: url, FLY_APP_URL: url, FLY_API_TOKEN, FLY_SYNC_SECRET, ...extra})
}

/** The variables that point an in-process handler at the stand-in's app (`my-fly-app`), with its token and secret. */
export const standInVars = (url) => ({FLY_APP_NAME: 'my-fly-app', FLY_API_URL: url, FLY_APP_URL: url, FLY_API_TOKEN, FLY_SYNC_SECRET})

/** Kill a detached child's whole process group; no-op once it has exited. */
export function killGroup(child, signal = 'SIGTERM') {
  if (child.exitCode !== null || child.signalCode !== null) return
  try {
    process.kill(-child.pid, signal)
  } catch (error) {
    if (error.code !== 'ESRCH') throw error
  }
}

/** Start a long-running child (own process group); `output()` is everything it printed so far. */
export function start(command, args, {env = childEnv(), cwd = ROOT} = {}) {
  const child = spawn(command, args, {cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe']})
  let output = ''
  const listeners = new Set()
  const onData = (chunk) => {
    output += chunk
    for (const listener of listeners) listener(output)
  }
  child.stdout.setEncoding('utf8').on('data', onData)
  child.stderr.setEncoding('utf8').on('data', onData)
  const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve({code, signal})))
  return {
    child,
    exited,
    output: () => output,
    /** Resolve when the output matches `pattern`; reject if the child exits first or after `timeoutMs`. */
    waitFor(pattern, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const done = (fn, value) => {
          listeners.delete(check)
          clearTimeout(timer)
          fn(value)
        }
        const check = (text) => {
          const m = text.match(pattern)
          if (m) done(resolve, m)
        }
        const timer = setTimeout(() => done(reject, new Error(`no ${pattern} within ${timeoutMs} ms:\n${output}`)), timeoutMs)
        exited.then(({code}) => done(reject, new Error(`exited (${code}) before ${pattern}:\n${output}`)))
        listeners.add(check)
        check(output)
      })
    },
    stop: async () => {
      killGroup(child)
      const timer = setTimeout(() => killGroup(child, 'SIGKILL'), 5_000)
      await exited
      clearTimeout(timer)
    },
  }
}

/** Run a child to its end (killed with its group after `timeoutMs`): `{code, signal, output}`. */
export async function run(command, args, {env = childEnv(), cwd = ROOT, timeoutMs = 60_000} = {}) {
  const proc = start(command, args, {env, cwd})
  const timer = setTimeout(() => killGroup(proc.child, 'SIGKILL'), timeoutMs)
  try {
    const {code, signal} = await proc.exited
    return {code, signal, output: proc.output()}
  } finally {
    clearTimeout(timer)
    killGroup(proc.child, 'SIGKILL')
  }
}

/** `sanity-run <args>` (the @sanity/runtime-cli bin) under this Node, from the repo root. */
export function sanityRun(args, options = {}) {
  return run(process.execPath, [SANITY_RUN, ...args], options)
}

/** A port that was free a moment ago (for servers that must be told their port up front). */
export async function freePort() {
  const server = createServer()
  await new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  const {port} = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}
