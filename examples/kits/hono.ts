// Hono: the receiver is a Web-standard handler, so the route hands it Hono's raw Request.
import {Hono} from 'hono'
import {createReceiver} from 'sanity-fly-sync/receiver'
import {apply, purge} from './content.ts'

const receive = createReceiver({secret: process.env.FLY_SYNC_SECRET!, apply, invalidate: purge})

export const app = new Hono()
app.post('/internal/content-sync', (c) => receive(c.req.raw))
// serve it as usual, e.g. `serve({fetch: app.fetch, port: 8080})` from @hono/node-server
