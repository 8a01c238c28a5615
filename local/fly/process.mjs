// A Machine whose app is an external process (`next start`, say) instead of an in-process handler. Use it from
// `handlerFor`: the fleet calls that on every boot, so every boot is a new process, and the fleet calls the
// handler's `close()` when that boot ends (stop, restart, failure, fleet.close) — the process is killed with its
// process group. The Machine's own server forwards each request to the process on its loopback port.
import {spawn} from 'node:child_process'

/**
 * Start `command` and resolve, once it answers HTTP at `url`, to a fleet handler with `close()`, `pid` and
 * `output()`. Rejects if it exits first or is not answering within `readyTimeoutMs`.
 * @param {{command: string, args: string[], env: Record<string, string>, cwd?: string, url: string,
 *          readyPath?: string, readyTimeoutMs?: number}} options
 */
export async function startProcessMachine({command, args, env, cwd, url, readyPath = '/', readyTimeoutMs = 30_000}) {
  const child = spawn(command, args, {cwd, env, detached: true, stdio: ['ignore', 'pipe', 'pipe']})
  let output = ''
  child.stdout.setEncoding('utf8').on('data', (s) => (output += s))
  child.stderr.setEncoding('utf8').on('data', (s) => (output += s))
  let exited = null
  const exit = new Promise((resolve) => child.on('exit', (code, signal) => resolve((exited = {code, signal}))))
  const kill = (signal) => {
    if (exited) return
    try {
      process.kill(-child.pid, signal)
    } catch (error) {
      if (error.code !== 'ESRCH') throw error
    }
  }

  // Ready = it answers HTTP at all. Bounded: by the deadline and by the process exiting.
  const deadline = Date.now() + readyTimeoutMs
  for (;;) {
    if (exited) throw new Error(`${command} exited (${exited.code ?? exited.signal}) before serving:\n${output}`)
    const answered = await fetch(`${url}${readyPath}`, {signal: AbortSignal.timeout(2_000)}).then(
      (r) => r.arrayBuffer().then(() => true),
      () => false,
    )
    if (answered) break
    if (Date.now() > deadline) {
      kill('SIGKILL')
      throw new Error(`${command} not answering at ${url} within ${readyTimeoutMs} ms:\n${output}`)
    }
    await Promise.race([exit, new Promise((resolve) => setTimeout(resolve, 50))])
  }

  /** @param {Request} request */
  const handler = async (request) => {
    const {pathname, search} = new URL(request.url)
    const body = ['GET', 'HEAD'].includes(request.method) ? undefined : await request.arrayBuffer()
    const upstream = await fetch(`${url}${pathname}${search}`, {method: request.method, headers: request.headers, body, redirect: 'manual'})
    // fetch has decoded the body: its encoding and length headers no longer describe it.
    const headers = new Headers(upstream.headers)
    for (const name of ['content-encoding', 'content-length', 'transfer-encoding']) headers.delete(name)
    const bytes = upstream.status === 204 || upstream.status === 304 ? null : await upstream.arrayBuffer()
    return new Response(bytes, {status: upstream.status, headers})
  }
  return Object.assign(handler, {
    pid: child.pid,
    output: () => output,
    /** Kill the process group (SIGTERM, then SIGKILL after 5 s) and wait for it. */
    async close() {
      kill('SIGTERM')
      const timer = setTimeout(() => kill('SIGKILL'), 5_000)
      await exit
      clearTimeout(timer)
    },
  })
}
