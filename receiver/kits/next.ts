// Next.js App Router: the receiver as a route handler that, after your `apply`, revalidates on this process every
// route the change names (`revalidatePath`) and every tag (`revalidateTag`), and the Sanity sync tags the sync-tag
// Function pushes (as next-sanity's `sanityFetch` tags its cache entries). Next's caches live in each server
// process, so revalidating in one Machine reaches only that Machine — the Function pushes to every one of them.
//
//   // app/internal/content-sync/route.ts
//   import {createNextRoute} from 'sanity-fly-sync/next'
//   export const POST = createNextRoute({secret: process.env.FLY_SYNC_SECRET!, apply: (change) => content.apply(change)})
//
// Framework glue only: verification, ordering, duplicates and the ack are the receiver's (createReceiver).
// `next/cache.js`, not `next/cache`: next has no exports map, so Node's ESM resolution (and tsc's) needs the file.
import {revalidatePath, revalidateTag} from 'next/cache.js'
import {createReceiver, type Receiver, type ReceiverOptions} from '../index.ts'

/** Next's `revalidateTag` profile: a cacheLife profile name, or `{expire}` in seconds. */
export type TagProfile = string | {expire?: number}

export interface NextRouteOptions extends ReceiverOptions {
  /**
   * How tagged entries are revalidated. Default `{expire: 0}`: expired at once, so the next request renders the
   * pushed content (`"max"` would serve the old entry once more while it re-renders in the background).
   */
  tagProfile?: TagProfile
  /**
   * Sanity sync tags (the sync-tag Function's push) are revalidated as `revalidateTag(prefix + tag)` for each of
   * these prefixes: next-sanity's `sanityFetch` tags a published query's cache entry `sp:<tag>` (earlier versions
   * `sanity:<tag>`). Default both; `[]` takes the tags without revalidating any (your `syncTags` hook still runs).
   */
  syncTagPrefixes?: readonly string[]
}

export interface NextRoute {
  (request: Request): Promise<Response>
  /** The receiver (created on the first request), e.g. for `catchUp()`. */
  receiver(): Receiver
}

/**
 * A POST route handler. The receiver is created on the first request, not when the module loads: `next build`
 * loads route modules, and the secret and FLY_MACHINE_ID exist only where the app runs. Bad options are answered
 * with a 500 naming the option (and logged), so the Function reports them.
 */
export function createNextRoute(options: NextRouteOptions): NextRoute {
  const {tagProfile = {expire: 0}, syncTagPrefixes = ['sp:', 'sanity:'], invalidate, syncTags, ...receiverOptions} = options
  let receiver: Receiver | undefined
  const get = () =>
    (receiver ??= createReceiver({
      ...receiverOptions,
      async invalidate(routes, tags, change, context) {
        for (const route of routes) revalidatePath(route)
        for (const tag of tags) revalidateTag(tag, tagProfile)
        await invalidate?.(routes, tags, change, context)
      },
      async syncTags(tags, context) {
        for (const tag of tags) for (const prefix of syncTagPrefixes) revalidateTag(`${prefix}${tag}`, tagProfile)
        await syncTags?.(tags, context)
      },
    }))
  const route = async (request: Request): Promise<Response> => {
    let handler: Receiver
    try {
      handler = get()
    } catch (error) {
      const e = error as {message?: string; field?: string}
      console.error(`sanity-fly-sync: the receiver's options are invalid: ${e.message ?? String(error)}`)
      return Response.json({error: e.message ?? String(error), field: e.field ?? null}, {status: 500})
    }
    return handler(request)
  }
  return Object.assign(route, {receiver: get})
}
