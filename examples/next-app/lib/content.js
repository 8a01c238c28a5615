// What this process holds: the documents the Function pushed (`applyChange`, from the sync route), in memory. Next
// bundles the route handler and the pages separately, so the store hangs on globalThis: one per process, that is
// one per Fly Machine.
const store = (globalThis.__sanityFlySyncContent ??= new Map())

/** The receiver's `apply` hook: store or remove the pushed document. */
export function applyChange(change) {
  if (change.op === 'delete') store.delete(change.id)
  else store.set(change.id, change.document)
}

export function articles() {
  return [...store.values()].filter((doc) => doc._type === 'article').sort((a, b) => String(a.title).localeCompare(String(b.title)))
}

export function articleBySlug(slug) {
  return articles().find((doc) => doc.slug === slug)
}
