// Express: the node kit's handler on the sync path, before any JSON body parser (the signature is checked over the
// raw bytes; after express.raw() works too).
import express from 'express'
import {createNodeReceiver} from 'sanity-fly-sync/node'
import {apply, purge} from './content.ts'

export const app = express()
app.post('/internal/content-sync', createNodeReceiver({secret: process.env.FLY_SYNC_SECRET!, apply, invalidate: purge}))
app.use(express.json()) // the app's own routes may parse JSON
