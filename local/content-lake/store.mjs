// The document store behind the local Content Lake: transactions of mutations, each committed document given a
// new `_rev` (the transaction id, as Sanity does) and `_updatedAt`, `_createdAt` kept from creation. Time comes
// from a clock the caller owns, so a scenario can say when an editor acts.
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

const clone = (v) => (v === undefined ? undefined : structuredClone(v))

export class DocumentStore {
  /** @param {{now?: () => number}} options */
  constructor({now = Date.now} = {}) {
    this.now = now
    /** @type {Map<string, object>} */
    this.docs = new Map()
    /** committed transactions, oldest first: {id, at, changes: [{id, before, after}]} */
    this.history = []
    this.listeners = new Set()
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

  /** Call `listener(transaction)` after every commit. */
  onCommit(listener) {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  /**
   * Apply mutations atomically: all or none. Each mutation is one of `{create}`, `{createOrReplace}`,
   * `{createIfNotExists}`, `{delete: {id}}`, `{patch: {id, set?, unset?, ifRevisionID?}}`.
   * @returns {{transactionId: string, results: Array<{id: string, operation: string}>, changes: Array<{id, before, after}>}}
   */
  transaction(mutations) {
    const txId = transactionId()
    const at = this.now()
    const time = sanityTime(at)
    const working = new Map()
    const read = (id) => (working.has(id) ? working.get(id) : clone(this.docs.get(id)) ?? null)
    const results = []
    for (const [i, mutation] of mutations.entries()) {
      const [kind, arg] = Object.entries(mutation)[0] ?? []
      const fail = (message) => {
        throw Object.assign(new Error(`mutation ${i} (${kind}): ${message}`), {statusCode: 409})
      }
      switch (kind) {
        case 'create':
        case 'createOrReplace':
        case 'createIfNotExists': {
          if (!arg || typeof arg._type !== 'string') fail('the document needs a `_type`')
          const id = arg._id ?? transactionId()
          const existing = read(id)
          if (existing && kind === 'create') fail(`document ${id} already exists`)
          if (existing && kind === 'createIfNotExists') {
            results.push({id, operation: 'none'})
            continue
          }
          const {_rev, _updatedAt, _createdAt, ...fields} = arg
          working.set(id, {...fields, _id: id, _createdAt: existing?._createdAt ?? time, _updatedAt: time, _rev: txId})
          results.push({id, operation: existing ? 'update' : 'create'})
          break
        }
        case 'delete': {
          const id = arg?.id
          if (!id) fail('needs an `id`')
          if (read(id)) results.push({id, operation: 'delete'})
          working.set(id, null)
          break
        }
        case 'patch': {
          const id = arg?.id
          const doc = read(id)
          if (!doc) fail(`document ${id} not found`)
          if (arg.ifRevisionID && arg.ifRevisionID !== doc._rev) fail(`revision mismatch on ${id}`)
          const next = {...doc}
          for (const [path, value] of Object.entries(arg.set ?? {})) setPath(next, path, clone(value))
          for (const path of arg.unset ?? []) unsetPath(next, path)
          working.set(id, {...next, _id: id, _type: doc._type, _createdAt: doc._createdAt, _updatedAt: time, _rev: txId})
          results.push({id, operation: 'update'})
          break
        }
        default:
          fail('unknown mutation')
      }
    }
    const changes = []
    for (const [id, after] of working) {
      const before = clone(this.docs.get(id)) ?? null
      if (!before && !after) continue
      if (after) this.docs.set(id, after)
      else this.docs.delete(id)
      changes.push({id, before, after: clone(after)})
    }
    const transaction = {id: txId, at, time, changes}
    this.history.push(transaction)
    for (const listener of this.listeners) listener(transaction)
    return {transactionId: txId, results, changes}
  }
}

// Dotted paths (`slug.current`, `seo.title`) — enough for the simulation's patches.
function setPath(doc, path, value) {
  const keys = path.split('.')
  let node = doc
  for (const key of keys.slice(0, -1)) node = node[key] = typeof node[key] === 'object' && node[key] !== null ? {...node[key]} : {}
  node[keys.at(-1)] = value
}

function unsetPath(doc, path) {
  const keys = path.split('.')
  let node = doc
  for (const key of keys.slice(0, -1)) {
    if (typeof node[key] !== 'object' || node[key] === null) return
    node = node[key] = {...node[key]}
  }
  delete node[keys.at(-1)]
}
