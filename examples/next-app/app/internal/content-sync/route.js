// The sync endpoint every Machine serves: the package's Next.js kit. It verifies, orders and deduplicates each
// push, runs `applyChange`, then revalidates the pushed routes and tags in this process, and acks with
// FLY_MACHINE_ID.
import {createNextRoute} from 'sanity-fly-sync/next'
import {applyChange} from '../../../lib/content.js'

export const POST = createNextRoute({secret: process.env.FLY_SYNC_SECRET, apply: applyChange})
