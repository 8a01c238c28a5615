// A published query fetched the way next-sanity's `sanityFetch` fetches one: the answer carries the sync tags Sanity
// attached to it, and the answer is kept in Next's data cache under those tags, prefixed `sp:` (next-sanity's prefix
// for published content). Nothing but a revalidation of one of those tags refreshes it — in Sanity's world the
// sync-tag-invalidate event, here pushed to every Machine by the sync-tag Function and revalidated by the kit.
// Two fetches, as next-sanity makes them: the first learns the tags (cached itself), the second is cached under them.
const QUERY_URL = process.env.SANITY_QUERY_URL // <api host>/v<version>/data/query/<dataset>
const TOKEN = process.env.SANITY_READ_TOKEN

export async function sanityFetch(query, params = {}) {
  const search = new URLSearchParams({query, perspective: 'published', returnQuery: 'false'})
  for (const [name, value] of Object.entries(params)) search.set(`$${name}`, JSON.stringify(value))
  const url = `${QUERY_URL}?${search}`
  const headers = TOKEN ? {authorization: `Bearer ${TOKEN}`} : {}
  const learn = await fetch(`${url}&tag=fetch-sync-tags`, {headers, cache: 'force-cache', next: {tags: ['sanity:fetch-sync-tags']}})
  const {syncTags = []} = await learn.json()
  const answer = await fetch(url, {headers, cache: 'force-cache', next: {tags: syncTags.map((tag) => `sp:${tag}`)}})
  return (await answer.json()).result
}
