// The baseline the bench compares against: the integration article's reference handler (described, not published
// as code; written here from that description), with the same shape as function.ts's `handler` and the same
// environment. Per event:
//   1. refetch the document by id with `@sanity/client` (from the Function's `context.clientOptions`, as Sanity's
//      own Function examples create their client) and skip when it is gone — so deletes never reach the app;
//   2. one POST of it to the app URL — no fly-force-instance-id, so Fly's proxy hands it to one Machine of its
//      choosing. (The article sends a static `x-sync-secret`; here the body is a correctly signed sync payload,
//      docs/protocol.md, so the reference receiver on that Machine accepts it);
//   3. list the app's Machines, and
//   4. restart every one of them at once (`Promise.all`): no leases, no health gating, no retries, on every event.
// A non-2xx answer throws, and `Promise.all` rejects on the first failed restart while the others go on — the
// article's invisible partial failure. A 10 s timeout per request stands in for the Function's default timeout.
//
// The bench runs it in the fleet (bench/harness.mjs) and, bundled the way the Function is bundled, for the cold
// start (bench/cold-start.mjs): `handler` is the bundle's entry.
import {createHmac} from 'node:crypto'
import {createClient} from '@sanity/client'

export const PROTOCOL = 'sanity-fly-sync/1'
export const SIGNATURE_HEADER = 'sanity-fly-sync-signature'
/** The API version the article's client asks for. */
const API_VERSION = '2025-05-01'

/** Sanity's webhook signature scheme with a millisecond timestamp (docs/protocol.md). */
export function signSync(body, secret, nowMs = Date.now()) {
  return `t=${nowMs},v1=${createHmac('sha256', secret).update(`${nowMs}.${body}`).digest('base64url')}`
}

/** The protocol's payload for an upsert of `data` (a projected event's data, or the refetched document). */
export function syncPayload(data, target) {
  const {op, previousSlug, ...document} = data
  const slug = typeof data.slug === 'string' ? data.slug : (data.slug?.current ?? null)
  return {
    protocol: PROTOCOL,
    target,
    op: 'upsert',
    operation: op ?? 'unknown',
    id: data._id,
    type: data._type,
    rev: data._rev,
    updatedAt: data._updatedAt,
    slug,
    previousSlug: previousSlug ?? null,
    routes: {invalidate: [], current: [], previous: []},
    tags: [],
    locale: data.locale ?? null,
    market: data.market ?? null,
    document,
    idempotencyKey: `upsert:${data._id}:${data._rev}`,
  }
}

/** A signed request for `data`, ready for `fetch(url, init)`. */
export function signedSyncRequest(data, {app, secret, nowMs = Date.now()}) {
  const body = JSON.stringify(syncPayload(data, app))
  return {
    method: 'POST',
    headers: {'content-type': 'application/json', 'idempotency-key': `upsert:${data._id}:${data._rev}`, [SIGNATURE_HEADER]: signSync(body, secret, nowMs)},
    body,
  }
}

/** @param {Record<string, string | undefined>} env */
export function createBaselineHandler(env) {
  return async function handler({context, event}) {
    const app = env.FLY_APP_NAME
    const appUrl = env.FLY_APP_URL ?? `https://${app}.fly.dev`
    const apiUrl = env.FLY_API_URL ?? 'https://api.machines.dev'
    const token = String(env.FLY_API_TOKEN ?? '')
    const syncPath = env.FLY_SYNC_PATH ?? '/internal/content-sync'
    const timeout = () => AbortSignal.timeout(10_000)

    const id = event?.data?._id
    const client = createClient({...context?.clientOptions, apiVersion: API_VERSION, useCdn: false})
    const doc = id ? await client.getDocument(id) : undefined
    if (!doc) return {ok: true, skipped: 'the document is gone: the article refetches it and skips'}

    const push = await fetch(`${appUrl}${syncPath}`, {...signedSyncRequest(doc, {app, secret: String(env.FLY_SYNC_SECRET)}), signal: timeout()})
    if (!push.ok) throw new Error(`baseline: sync POST answered ${push.status}`)
    const ack = await push.json()

    const authorization = /^(bearer|flyv1)\s/i.test(token) ? token : `Bearer ${token}`
    const list = await fetch(`${apiUrl}/v1/apps/${app}/machines`, {headers: {authorization}, signal: timeout()})
    if (!list.ok) throw new Error(`baseline: listing Machines answered ${list.status}`)
    const machines = await list.json()
    await Promise.all(
      machines.map(async (m) => {
        const r = await fetch(`${apiUrl}/v1/apps/${app}/machines/${m.id}/restart`, {method: 'POST', headers: {authorization}, signal: timeout()})
        if (!r.ok) throw new Error(`baseline: restarting ${m.id} answered ${r.status}`)
      }),
    )
    return {ok: true, pushedTo: ack.machine ?? null, restarted: machines.length}
  }
}

/** Same call shape as function.ts's `handler`, reading the Function's environment. */
export const handler = (args) => createBaselineHandler(process.env)(args)
