// The GROQ-webhook entry (`createWebhookHandler` in function.ts) on a plain node:http server.
//
// `createWebhookHandler(env)` is a Web-standard `Request → Response` function; Deno, Bun and workers can mount it
// as it is. Node's http server speaks IncomingMessage/ServerResponse, so this file adapts between the two:
// the body is passed on as raw bytes (the signature is checked over exactly those bytes) and the core's status
// and JSON answer go back unchanged. Reuse `toWebRequest` / `sendWebResponse` / `nodeListener` with any handler.
//
// Run it:  SANITY_WEBHOOK_SECRET=… FLY_SYNC_SECRET=… FLY_API_TOKEN=… FLY_APP_NAME=my-fly-app \
//          node examples/webhook-server.mjs          # PORT (default 3000), HOST (default 127.0.0.1)
// then point a GROQ-powered webhook (with a secret) at http://<host>:<port>/.
import {createServer} from 'node:http'
import {fileURLToPath} from 'node:url'
import {createWebhookHandler} from '../function.ts'

/**
 * Deliveries larger than this are refused (413) before anything is read into the core. The core refuses a body
 * over the same 4 MiB (`MAX_INPUT_BYTES` in src/event.rs) wherever the handler is mounted; this adapter only
 * stops reading one sooner.
 */
export const MAX_BODY_BYTES = 4 * 1024 * 1024

class TooLarge extends Error {}

/** node:http request → Web `Request`, with the body buffered as raw bytes (at most `maxBodyBytes`). */
export async function toWebRequest(req, {maxBodyBytes = MAX_BODY_BYTES} = {}) {
  // Refuse a declared oversize body before reading it (Node discards the unread rest after the answer).
  if (Number(req.headers['content-length'] ?? 0) > maxBodyBytes) throw new TooLarge(`body over ${maxBodyBytes} bytes`)
  const headers = new Headers()
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1])
  const chunks = []
  let size = 0
  for await (const chunk of req) {
    size += chunk.length
    if (size > maxBodyBytes) throw new TooLarge(`body over ${maxBodyBytes} bytes`)
    chunks.push(chunk)
  }
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
  const url = new URL(req.url ?? '/', `http://${req.headers.host ?? '127.0.0.1'}`)
  return new Request(url, {method: req.method, headers, body: hasBody ? Buffer.concat(chunks) : undefined})
}

/** Web `Response` → node:http response (status, headers, body bytes). */
export async function sendWebResponse(res, response) {
  const body = Buffer.from(await response.arrayBuffer())
  const headers = {}
  response.headers.forEach((value, name) => (headers[name] = value))
  res.writeHead(response.status, {...headers, 'content-length': String(body.length)})
  res.end(body)
}

const json = (status, value) => Response.json(value, {status})

/** A node:http listener around any `Request → Promise<Response>` handler; only POST reaches the handler. */
export function nodeListener(handler, options = {}) {
  return async (req, res) => {
    let response
    try {
      if (req.method !== 'POST') {
        response = json(405, {error: 'GROQ-powered webhooks POST their deliveries; use POST'})
      } else {
        response = await handler(await toWebRequest(req, options))
      }
    } catch (error) {
      response =
        error instanceof TooLarge
          ? Response.json({error: error.message}, {status: 413, headers: {connection: 'close'}})
          : json(500, {error: `webhook server: ${error instanceof Error ? error.message : String(error)}`})
    }
    await sendWebResponse(res, response)
  }
}

/** An http.Server (not yet listening) running the webhook entry with `env` (the variables of src/config.rs). */
export function createWebhookServer(env = process.env, options = {}) {
  return createServer(nodeListener(createWebhookHandler(env, options.log), options))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.env.PORT ?? 3000)
  const host = process.env.HOST ?? '127.0.0.1'
  createWebhookServer(process.env).listen(port, host, () => console.log(`webhook entry on http://${host}:${port}/`))
}
