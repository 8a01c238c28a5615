// Sync tags, as the local Content Lake makes them. Sanity's Content Lake attaches opaque tags (`s1:…`) to every
// query response, naming the content the response depends on, and its Live Content API (and the sync-tag-invalidate
// Function) announce the tags a change invalidates; a cache holding a response with one of those tags refetches.
// How Sanity derives its tags is not public and its tags are opaque: the rule below is only this stand-in's
// (README.md, "Sync tags"), chosen to be simple, conservative and testable:
//
//   - a query response carries one tag per document it read — every document it returned whole, and every document
//     it looked up a field of (other than `_id` and `_type`; present or missing) while evaluating, `->` included —
//     and one tag per type of those documents;
//   - a committed change of a published document invalidates that document's tag; a create or a delete (and a
//     `createOrReplace` that changes the type) also its type's tag, since the set of documents of that type changed.
//     Drafts and release versions invalidate nothing (the Live Content API speaks for published content).
//
// The tags look like Sanity's (`s1:` and a short opaque string) and are stable for a project, dataset and
// document id (or type), so tests can compute them with `documentTag` / `typeTag`.
import {createHash} from 'node:crypto'
import {publishedId} from './store.mjs'

const opaque = (...parts) => `s1:${createHash('sha256').update(parts.join('\u0000')).digest('base64url').slice(0, 8)}`

/** The tag of one document (by its published id) in `projectId`/`dataset`. */
export const documentTag = (projectId, dataset, id) => opaque('document', projectId, dataset, publishedId(id))

/** The tag of every document of `type` in `projectId`/`dataset`. */
export const typeTag = (projectId, dataset, type) => opaque('type', projectId, dataset, type)

const isPublishedId = (id) => !id.startsWith('drafts.') && !id.startsWith('versions.')

/**
 * The tags a committed transaction invalidates: for each changed published document, its tag and its type's
 * (before and after). Sorted, each once; `[]` when only drafts or versions changed.
 * @param {{projectId: string, dataset: string}} where
 * @param {{changes: Array<{id: string, before: object|null, after: object|null}>}} transaction
 */
export function invalidatedTags({projectId, dataset}, transaction) {
  const tags = new Set()
  for (const {id, before, after} of transaction.changes) {
    if (!isPublishedId(id)) continue
    tags.add(documentTag(projectId, dataset, id))
    // An update within one type changes no set of documents of a type: the documents that queries read carry their
    // own tags. A create, a delete or a change of type does.
    if (before?._type !== after?._type) {
      for (const doc of [before, after]) if (typeof doc?._type === 'string') tags.add(typeTag(projectId, dataset, doc._type))
    }
  }
  return [...tags].sort()
}

// The attributes whose reading does not make a document "read": groq-js compares `_type` and `_id` of every
// document a filter scans, and its lookups by id read `_id`. `then` is how JavaScript asks whether a value is a
// promise.
const NOT_CONTENT = new Set(['_id', '_type', 'then'])
const content = (key) => typeof key === 'string' && !NOT_CONTENT.has(key)

/**
 * Watch which of `docs` a query evaluation reads. `dataset` is what to hand groq-js (each document behind a Proxy
 * that notes the reads); after the evaluation, `tags(result)` gives the response's sync tags (the documents the
 * result holds whole count as read). Reads stop counting once `tags` is called (serialising the result reads
 * everything).
 * @param {{projectId: string, dataset: string}} where
 * @param {object[]} docs  the documents of the perspective, `_id` already the published id
 */
export function readTracker({projectId, dataset}, docs) {
  const read = new Set()
  const originals = new Map()
  let watching = true
  const note = (doc) => watching && read.add(doc)
  const proxies = docs.map((doc) => {
    const proxy = new Proxy(doc, {
      // groq-js looks a field up with hasOwnProperty (this trap), then reads it: a lookup of a missing field counts
      // too (the document may gain it). A plain `get` counts only for the document's own fields: groq-js also reads
      // `next` and `hasOwnProperty` off every value, which are not content.
      getOwnPropertyDescriptor(target, key) {
        if (content(key)) note(target)
        return Reflect.getOwnPropertyDescriptor(target, key)
      },
      get(target, key, receiver) {
        if (content(key) && Object.hasOwn(target, key)) note(target)
        return Reflect.get(target, key, receiver)
      },
      has(target, key) {
        if (content(key)) note(target)
        return Reflect.has(target, key)
      },
      // `...` in a projection, `references()`: the whole document.
      ownKeys(target) {
        note(target)
        return Reflect.ownKeys(target)
      },
    })
    originals.set(proxy, doc)
    return proxy
  })

  /** Mark the documents `value` holds whole (not copies: the very objects handed to groq-js). */
  function returned(value, depth = 0) {
    if (value === null || typeof value !== 'object' || depth > 64) return
    const doc = originals.get(value)
    if (doc) {
      read.add(doc)
      return
    }
    for (const child of Array.isArray(value) ? value : Object.values(value)) returned(child, depth + 1)
  }

  return {
    dataset: proxies,
    tags(result) {
      watching = false
      returned(result)
      const tags = new Set()
      for (const doc of read) {
        tags.add(documentTag(projectId, dataset, doc._id))
        if (typeof doc._type === 'string') tags.add(typeTag(projectId, dataset, doc._type))
      }
      return [...tags].sort()
    },
  }
}
