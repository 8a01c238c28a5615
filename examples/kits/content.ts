// The app's own content store, as the kit examples beside this file use it: documents by id, kept in memory, and
// the routes and tags the last changes asked to purge. A real app writes to its cache, database or files here.
import type {SyncPayload} from 'sanity-fly-sync/receiver'

export const documents = new Map<string, Record<string, unknown>>()
export const purged: string[] = []

export function apply(change: SyncPayload) {
  if (change.op === 'delete') documents.delete(change.id)
  else documents.set(change.id, change.document as Record<string, unknown>)
}

export function purge(routes: string[], tags: string[]) {
  purged.push(...routes, ...tags)
}
