// The GROQ-webhook entry (`createWebhookHandler` in function.ts) on a plain node:http server.
//
// `createWebhookHandler(env)` is a Web-standard `Request → Response` function; Deno, Bun and workers can mount it
// as it is. Node's http server speaks IncomingMessage/ServerResponse: the package's node kit (receiver/kits/node.ts,
// `sanity-fly-sync/node`) adapts between the two — the body is passed on as raw bytes (the signature is checked over
// exactly those bytes) and the core's status and JSON answer go back unchanged.
//
// Run it:  SANITY_WEBHOOK_SECRET=… FLY_SYNC_SECRET=… FLY_API_TOKEN=… FLY_APP_NAME=my-fly-app \
//          node examples/webhook-server.mjs          # PORT (default 3000), HOST (default 127.0.0.1)
// then point a GROQ-powered webhook (with a secret) at http://<host>:<port>/.
import {createServer} from 'node:http'
import {fileURLToPath} from 'node:url'
import {createWebhookHandler} from '../function.ts'
import {MAX_BODY_BYTES, nodeListener, sendWebResponse, toWebRequest} from '../receiver/kits/node.ts'

export {MAX_BODY_BYTES, nodeListener, sendWebResponse, toWebRequest}

/** Only POST reaches the webhook entry. */
const postOnly = (handler) => (request) =>
  request.method === 'POST' ? handler(request) : Response.json({error: 'GROQ-powered webhooks POST their deliveries; use POST'}, {status: 405})

/** An http.Server (not yet listening) running the webhook entry with `env` (the variables of src/config.rs). */
export function createWebhookServer(env = process.env, options = {}) {
  return createServer(nodeListener(postOnly(createWebhookHandler(env, options.log)), options))
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.env.PORT ?? 3000)
  const host = process.env.HOST ?? '127.0.0.1'
  createWebhookServer(process.env).listen(port, host, () => console.log(`webhook entry on http://${host}:${port}/`))
}
