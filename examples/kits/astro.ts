// Astro: an endpoint, src/pages/internal/content-sync.ts, rendered on demand (an SSR adapter such as @astrojs/node).
import type {APIRoute} from 'astro'
import {createReceiver} from 'sanity-fly-sync/receiver'
import {apply, purge} from './content.ts'

export const prerender = false

const receive = createReceiver({secret: process.env.FLY_SYNC_SECRET!, apply, invalidate: purge})

export const POST: APIRoute = ({request}) => receive(request)
