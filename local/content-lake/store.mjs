// The document store behind the local Content Lake: transactions of mutations, each committed document given a
// new `_rev` (the transaction id, as Sanity does) and `_updatedAt`, `_createdAt` kept from creation. Time comes
// from a clock the caller owns, so a scenario can say when an editor acts.
//
// Used directly by the simulation and through HTTP by `server.mjs` (the part of Sanity's API that
// `@sanity/client` speaks). A failed mutation throws a `MutationError` whose `item` is what Sanity puts in its
// `error.items[].error` (`type`, `id`, `description`, …), so the server can answer with Sanity's error shape.
import {randomBytes} from 'node:crypto'

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789'

/** A Sanity-looking transaction id (22 base62 characters). */
export function transactionId() {
  return [...randomBytes(22)].map((b) => ALPHABET[b % ALPHABET.length]).join('')
}

/** Sanity writes `_updatedAt` to the second (`2026-11-27T10:00:00Z`). */
export function sanityTime(ms) {
  return new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z')
}

/** The published id of a document id: `drafts.x` → `x`, `versions.r.x` → `x`, `x` → `x`. */
export function publishedId(id) {
  if (id.startsWith('drafts.')) return id.slice('drafts.'.length)
  if (id.startsWith('versions.')) return id.split('.').slice(2).join('.')
  return id
}

// Sanity's rule for document ids: letters, digits, `_`, `-` and `.` (path separator), at most 128 characters,
// not starting with `-`.
const VALID_ID = /^[A-Za-z0-9_.][A-Za-z0-9_.-]{0,127}$/

/**
 * A mutation the store refused. `statusCode` is 409 for conflicts (exists, not found, revision) and 400 for a
 * malformed mutation; `index` is the mutation's position in the transaction; `item` is Sanity's error item.
 */
export class MutationError extends Error {
  constructor({index, kind, statusCode, item}) {
    super(`mutation ${index} (${kind}): ${item.description}`)
    this.name = 'MutationError'
    this.statusCode = statusCode
    this.index = index
    this.kind = kind
    this.item = item
  }
}

const clone = (v) => (v === undefined ? undefined : structuredClone(v))

export class DocumentStore {
  /** @param {{now?: () => number}} options */
  constructor({now = Date.now} = {}) {
    this.now = now
    /** @type {Map<string, object>} */
    this.docs = new Map()
    /** committed transactions, oldest first: {id, at, time, changes: [{id, before, after}]} */
    this.history = []
    this.listeners = new Set()
    this.transactionIds = new Set()
  }

  get(id) {
    return clone(this.docs.get(id))
  }

  all() {
    return [...this.docs.values()].map(clone)
  }

  /** Published documents only (what a live app serves). */
  published() {
    return this.all().filter((d) => !d._id.startsWith('drafts.') && !d._id.startsWith('versions.'))
  }

  /**
   * Call `listener(transaction)` after every commit (not after a dry run), with `{id, at, time, changes}`;
   * `changes` holds every document the transaction changed, `{id, before, after}` (null when absent).
   * Every listener runs; if any throws, `transaction()` throws afterwards (the transaction stays committed).
   */
  onCommit(listener) {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Apply mutations atomically: all or none. Each mutation is one of `{create}`, `{createOrReplace}`,
   * `{createIfNotExists}`, `{delete: {id}}`, `{patch: {id, ifRevisionID?, set?, setIfMissing?, unset?, inc?, dec?,
   * insert?}}` (Sanity's shapes; paths like `slug.current`, `tags[0]`, `items[_key=="a"].title`).
   * Query selections (`{delete: {query}}`) are for the server to resolve into ids first.
   * `options.transactionId` names the transaction (must be new, as in Sanity); `options.dryRun` computes the
   * result without committing or notifying.
   * @param {object[]} mutations
   * @param {{transactionId?: string, dryRun?: boolean}} [options]
   * @returns {{transactionId: string, results: Array<{id: string, operation: string}>, changes: Array<{id, before, after}>, time: string}}
   */
  transaction(mutations, {transactionId: wantedId, dryRun = false} = {}) {
    if (!Array.isArray(mutations)) {
      throw new MutationError({index: 0, kind: 'transaction', statusCode: 400, item: {type: 'validationError', description: 'mutations must be an array'}})
    }
    if (wantedId !== undefined && (typeof wantedId !== 'string' || !wantedId)) {
      throw new MutationError({index: 0, kind: 'transaction', statusCode: 400, item: {type: 'validationError', description: 'transactionId must be a non-empty string'}})
    }
    if (wantedId && this.transactionIds.has(wantedId)) {
      throw new MutationError({
        index: 0,
        kind: 'transaction',
        statusCode: 409,
        item: {type: 'transactionIdAlreadyExistsError', description: `Transaction ID "${wantedId}" already exists`},
      })
    }
    const txId = wantedId ?? transactionId()
    const at = this.now()
    const time = sanityTime(at)
    const working = new Map()
    const read = (id) => (working.has(id) ? working.get(id) : clone(this.docs.get(id)) ?? null)
    const results = []
    for (const [i, mutation] of mutations.entries()) {
      const entries = mutation && typeof mutation === 'object' && !Array.isArray(mutation) ? Object.entries(mutation) : []
      const [kind, arg] = entries.length === 1 ? entries[0] : [entries.map(([k]) => k).join('+') || 'none', undefined]
      const fail = (statusCode, item) => {
        throw new MutationError({index: i, kind, statusCode, item})
      }
      const invalid = (description) => fail(400, {type: 'validationError', description})
      if (entries.length !== 1) invalid('a mutation is an object with exactly one of create, createOrReplace, createIfNotExists, delete, patch')
      switch (kind) {
        case 'create':
        case 'createOrReplace':
        case 'createIfNotExists': {
          if (!arg || typeof arg !== 'object' || Array.isArray(arg)) invalid(`${kind} takes a document`)
          if (typeof arg._type !== 'string' || !arg._type) invalid('Document does not have a type')
          if (kind !== 'create' && typeof arg._id !== 'string') invalid(`${kind} requires a document _id`)
          // Sanity: no `_id` → a random one; an `_id` ending with `.` → that prefix and a random one.
          const id = arg._id === undefined ? transactionId() : arg._id.endsWith('.') ? arg._id + transactionId() : arg._id
          if (typeof id !== 'string' || !VALID_ID.test(id)) invalid(`Malformed document ID: "${id}"`)
          const existing = read(id)
          if (existing && kind === 'create') fail(409, {type: 'documentAlreadyExistsError', id, description: `Document by ID "${id}" already exists`})
          if (existing && kind === 'createIfNotExists') {
            results.push({id, operation: 'none'})
            continue
          }
          const {_rev, _updatedAt, _createdAt, ...fields} = clone(arg)
          // createOrReplace with another `_type` acts as a delete and a create (Sanity's documented rule).
          const createdAt = existing && existing._type === arg._type ? existing._createdAt : time
          working.set(id, {...fields, _id: id, _createdAt: createdAt, _updatedAt: time, _rev: txId})
          results.push({id, operation: existing ? 'update' : 'create'})
          break
        }
        case 'delete': {
          const id = arg?.id
          if (arg?.query !== undefined && id === undefined) invalid('delete by query: resolve the query into ids first (the server does)')
          if (typeof id !== 'string' || !id) invalid('delete needs an `id`')
          if (read(id)) results.push({id, operation: 'delete'})
          working.set(id, null)
          break
        }
        case 'patch': {
          const id = arg?.id
          if (arg?.query !== undefined && id === undefined) invalid('patch by query: resolve the query into ids first (the server does)')
          if (typeof id !== 'string' || !id) invalid('patch needs an `id`')
          const doc = read(id)
          if (!doc) fail(409, {type: 'documentNotFoundError', id, description: `The document with the ID "${id}" was not found`})
          if (arg.ifRevisionID !== undefined && arg.ifRevisionID !== doc._rev) {
            fail(409, {
              type: 'documentRevisionIDDoesNotMatchError',
              id,
              currentRevisionID: doc._rev,
              expectedRevisionID: arg.ifRevisionID,
              description: `Document "${id}" has unexpected revision ID ("${doc._rev}"), expected "${arg.ifRevisionID}"`,
            })
          }
          let next
          try {
            next = applyPatch(clone(doc), arg)
          } catch (error) {
            invalid(error.message)
          }
          working.set(id, {...next, _id: id, _type: doc._type, _createdAt: doc._createdAt, _updatedAt: time, _rev: txId})
          results.push({id, operation: 'update'})
          break
        }
        default:
          invalid(`unknown mutation "${kind}"`)
      }
    }
    const changes = []
    for (const [id, after] of working) {
      const before = clone(this.docs.get(id)) ?? null
      if (!before && !after) continue
      changes.push({id, before, after: clone(after)})
    }
    if (dryRun) return {transactionId: txId, results, changes, time}
    for (const [id, after] of working) {
      if (after) this.docs.set(id, after)
      else this.docs.delete(id)
    }
    const transaction = {id: txId, at, time, changes}
    this.history.push(transaction)
    this.transactionIds.add(txId)
    const errors = []
    for (const listener of this.listeners) {
      try {
        listener(transaction)
      } catch (error) {
        errors.push(error)
      }
    }
    if (errors.length) {
      const error = errors.length === 1 ? errors[0] : new AggregateError(errors, `${errors.length} onCommit listeners threw`)
      throw Object.assign(error, {committed: true, transactionId: txId})
    }
    return {transactionId: txId, results, changes, time}
  }
}

// ---- patches ---------------------------------------------------------------------------------------------------

const PATCH_KEYS = new Set(['id', 'ifRevisionID', 'set', 'setIfMissing', 'unset', 'inc', 'dec', 'insert'])

/** Apply one patch to `doc` (mutated in place and returned), in Sanity's order: set, setIfMissing, unset, inc, dec, insert. */
function applyPatch(doc, patch) {
  for (const key of Object.keys(patch)) {
    if (!PATCH_KEYS.has(key)) throw new Error(`patch operation "${key}" is not supported by the local Content Lake`)
  }
  for (const [path, value] of Object.entries(patch.set ?? {})) setAt(doc, parsePath(path), clone(value), {ifMissing: false})
  for (const [path, value] of Object.entries(patch.setIfMissing ?? {})) setAt(doc, parsePath(path), clone(value), {ifMissing: true})
  if (patch.unset !== undefined && !Array.isArray(patch.unset)) throw new Error('unset takes an array of paths')
  for (const path of patch.unset ?? []) unsetAt(doc, parsePath(path))
  for (const [op, sign] of [['inc', 1], ['dec', -1]]) {
    for (const [path, amount] of Object.entries(patch[op] ?? {})) {
      if (typeof amount !== 'number') throw new Error(`${op} takes numbers`)
      const segments = parsePath(path)
      const current = getAt(doc, segments)
      if (typeof current === 'number') setAt(doc, segments, current + sign * amount, {ifMissing: false})
    }
  }
  if (patch.insert) insertAt(doc, patch.insert)
  return doc
}

/**
 * `title`, `slug.current`, `tags[0]`, `tags[-1]`, `items[_key=="a"].title` → segments: a string (attribute),
 * `{index}` or `{key}`. Other selectors (filters, wildcards, ranges) are refused, clearly.
 */
export function parsePath(path) {
  if (typeof path !== 'string' || !path) throw new Error(`invalid path ${JSON.stringify(path)}`)
  const segments = []
  let i = 0
  while (i < path.length) {
    if (path[i] === '.') {
      i++
      continue
    }
    if (path[i] === '[') {
      const end = path.indexOf(']', i)
      if (end === -1) throw new Error(`invalid path "${path}"`)
      const inner = path.slice(i + 1, end).trim()
      const key = /^_key\s*==\s*(?:"([^"]*)"|'([^']*)')$/.exec(inner)
      if (/^-?\d+$/.test(inner)) segments.push({index: Number(inner)})
      else if (key) segments.push({key: key[1] ?? key[2]})
      else throw new Error(`path "${path}": the selector [${inner}] is not supported by the local Content Lake (use an index or _key=="…")`)
      i = end + 1
      continue
    }
    const match = /^[A-Za-z_$][\w$-]*/.exec(path.slice(i))
    if (!match) throw new Error(`invalid path "${path}"`)
    segments.push(match[0])
    i += match[0].length
  }
  if (!segments.length) throw new Error(`invalid path "${path}"`)
  return segments
}

function childKey(container, segment) {
  if (typeof segment === 'string') return container !== null && typeof container === 'object' && !Array.isArray(container) ? segment : undefined
  if (!Array.isArray(container)) return undefined
  if ('index' in segment) {
    const index = segment.index < 0 ? container.length + segment.index : segment.index
    return index >= 0 && index < container.length ? index : undefined
  }
  const index = container.findIndex((item) => item && item._key === segment.key)
  return index === -1 ? undefined : index
}

function getAt(doc, segments) {
  let node = doc
  for (const segment of segments) {
    const key = childKey(node, segment)
    if (key === undefined) return undefined
    node = node[key]
  }
  return node
}

// Attributes along the way are created as objects (as Sanity's `set` does); a missing array element is a no-op.
function setAt(doc, segments, value, {ifMissing}) {
  let node = doc
  for (const [n, segment] of segments.entries()) {
    const last = n === segments.length - 1
    let key = childKey(node, segment)
    if (key === undefined) {
      if (typeof segment !== 'string' || node === null || typeof node !== 'object' || Array.isArray(node)) return
      key = segment
    }
    if (last) {
      if (!ifMissing || node[key] === undefined || node[key] === null) node[key] = value
      return
    }
    if (node[key] === null || typeof node[key] !== 'object') {
      if (typeof segments[n + 1] !== 'string') return
      node[key] = {}
    }
    node = node[key]
  }
}

function unsetAt(doc, segments) {
  const parent = getAt(doc, segments.slice(0, -1))
  const key = childKey(parent, segments.at(-1))
  if (key === undefined) return
  if (Array.isArray(parent)) parent.splice(key, 1)
  else delete parent[key]
}

function insertAt(doc, insert) {
  const positions = ['before', 'after', 'replace'].filter((p) => insert[p] !== undefined)
  if (positions.length !== 1) throw new Error('insert takes exactly one of before, after, replace')
  if (!Array.isArray(insert.items)) throw new Error('insert takes an array of items')
  const [position] = positions
  const segments = parsePath(insert[position])
  const last = segments.at(-1)
  if (typeof last === 'string') throw new Error(`insert ${position} "${insert[position]}": the path must end with an array index or _key selector`)
  const array = getAt(doc, segments.slice(0, -1))
  if (!Array.isArray(array)) return
  const items = clone(insert.items)
  const index = childKey(array, last)
  if (index === undefined) {
    // Appending to or prepending into an empty array (`tags[-1]`, `tags[0]`) works, as in Sanity.
    const intoEmpty = array.length === 0 && 'index' in last && (last.index === 0 || last.index === -1) && position !== 'replace'
    if (intoEmpty) array.push(...items)
    return
  }
  if (position === 'before') array.splice(index, 0, ...items)
  else if (position === 'after') array.splice(index + 1, 0, ...items)
  else array.splice(index, 1, ...items)
}
