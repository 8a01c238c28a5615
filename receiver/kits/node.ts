// node:http and Express (or Connect): the receiver, or any Web-standard `Request → Response` handler, as a
// `(req, res)` listener. Framework glue only: the body is buffered as raw bytes (the signature is checked over
// exactly those bytes) up to a cap, and the handler's status, headers and body go back unchanged.
//
//   import {createServer} from 'node:http'
//   import {createNodeReceiver} from 'sanity-fly-sync/node'
//   const sync = createNodeReceiver({secret: process.env.FLY_SYNC_SECRET!, apply, invalidate})
//   createServer((req, res) => (req.url === '/internal/content-sync' ? sync(req, res) : app(req, res)))
//   // Express: app.post('/internal/content-sync', sync)   — before any body parser, or after express.raw()
import type {IncomingMessage, ServerResponse} from 'node:http'
import {createReceiver, type Receiver, type ReceiverOptions} from '../index.ts'

/** Requests with a larger body are refused (413) before anything is read into the core. */
export const MAX_BODY_BYTES = 4 * 1024 * 1024

export interface NodeOptions {
  /** Default 4 MiB. */
  maxBodyBytes?: number
}

export type WebHandler = (request: Request) => Response | Promise<Response>
/** A node:http listener that also fits Express/Connect (`next` is only called for a failure to answer at all). */
export type NodeListener = (req: IncomingMessage, res: ServerResponse, next?: (error?: unknown) => void) => Promise<void>

class TooLarge extends Error {}
class AlreadyParsed extends Error {}

/** What Express's body parsers leave behind: `req.body`, with the stream already read. */
type MaybeParsed = IncomingMessage & {body?: unknown; originalUrl?: string}

/** node:http request → Web `Request`, with the body buffered as raw bytes (at most `maxBodyBytes`). */
export async function toWebRequest(req: IncomingMessage, {maxBodyBytes = MAX_BODY_BYTES}: NodeOptions = {}): Promise<Request> {
  // Refuse a declared oversize body before reading it (Node discards the unread rest after the answer).
  if (Number(req.headers['content-length'] ?? 0) > maxBodyBytes) throw new TooLarge(`body over ${maxBodyBytes} bytes`)
  const headers = new Headers()
  for (let i = 0; i < req.rawHeaders.length; i += 2) headers.append(req.rawHeaders[i], req.rawHeaders[i + 1])
  const hasBody = req.method !== 'GET' && req.method !== 'HEAD'
  const parsed = (req as MaybeParsed).body
  let body: Buffer
  if (req.readableEnded && parsed !== undefined) {
    // A body parser ran first. Raw bytes (express.raw()) are still the signed bytes; anything parsed is not.
    if (!Buffer.isBuffer(parsed)) {
      throw new AlreadyParsed('the request body was parsed before the sync handler; mount it before express.json() (or use express.raw())')
    }
    if (parsed.length > maxBodyBytes) throw new TooLarge(`body over ${maxBodyBytes} bytes`)
    body = parsed
  } else {
    const chunks: Buffer[] = []
    let size = 0
    for await (const chunk of req as AsyncIterable<Buffer>) {
      size += chunk.length
      if (size > maxBodyBytes) throw new TooLarge(`body over ${maxBodyBytes} bytes`)
      chunks.push(chunk)
    }
    body = Buffer.concat(chunks)
  }
  const url = new URL((req as MaybeParsed).originalUrl ?? req.url ?? '/', `http://${req.headers.host ?? '127.0.0.1'}`)
  return new Request(url, {method: req.method, headers, body: hasBody ? new Uint8Array(body) : undefined})
}

/** Web `Response` → node:http response (status, headers, body bytes). */
export async function sendWebResponse(res: ServerResponse, response: Response): Promise<void> {
  const body = Buffer.from(await response.arrayBuffer())
  const headers: Record<string, string> = {}
  response.headers.forEach((value, name) => (headers[name] = value))
  res.writeHead(response.status, {...headers, 'content-length': String(body.length)})
  res.end(body)
}

/** A node:http listener (and Express handler) around any `Request → Response` handler. */
export function nodeListener(handler: WebHandler, options: NodeOptions = {}): NodeListener {
  return async (req, res, next) => {
    let response: Response
    try {
      response = await handler(await toWebRequest(req, options))
    } catch (error) {
      response =
        error instanceof TooLarge
          ? Response.json({error: error.message}, {status: 413, headers: {connection: 'close'}})
          : Response.json({error: `sync handler: ${error instanceof Error ? error.message : String(error)}`}, {status: 500})
    }
    try {
      await sendWebResponse(res, response)
    } catch (error) {
      if (next) next(error)
      else res.destroy(error instanceof Error ? error : undefined)
    }
  }
}

export interface NodeReceiver extends NodeListener {
  /** The receiver itself (`catchUp()`, `ready`, `close()`). */
  receiver: Receiver
}

/** The receiver as a node:http listener / Express handler. Throws `{class, field, message}` for bad options. */
export function createNodeReceiver(options: ReceiverOptions & NodeOptions): NodeReceiver {
  const {maxBodyBytes, ...receiverOptions} = options
  const receiver = createReceiver(receiverOptions)
  return Object.assign(nodeListener(receiver, {maxBodyBytes}), {receiver})
}
