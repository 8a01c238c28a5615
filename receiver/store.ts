// Where the receiver keeps its own state — the revisions it holds (tombstones among them), the idempotency keys it
// remembers, the catch-up high-water mark. By default in memory: a restarted Machine then reads everything again
// from Sanity. `sqliteStore(path)` keeps it in SQLite (Node's built-in `node:sqlite`, Node 22.5 or later) on a Fly
// Volume or a LiteFS mount: a restarted Machine catches up from its mark.
//
// The app can keep its own content in the same database (`store.db`): each change's hooks run inside one
// transaction with the receiver's record of it, so a crash at any point of an apply leaves both or neither — no
// change lost, none applied twice. This file only runs the statements the wasm core writes (src/receiver_store.rs).
import {createRequire} from 'node:module'
import type {DatabaseSync} from 'node:sqlite'

export interface SqliteStore {
  readonly kind: 'sqlite'
  readonly path: string
  /** The database: keep your own content here (write it in your `apply` hook) to commit it with each change. */
  readonly db: DatabaseSync
  close(): void
}

/** What the wasm core calls: synchronous, as node:sqlite is. */
export interface StoreAdapter {
  exec(statements: string): void
  all(statement: string): string
  begin(): void
  commit(): void
  rollback(): void
}

type Statement = {sql: string; params: (string | number | null)[]}

const adapters = new WeakMap<SqliteStore, StoreAdapter>()

/** The adapter of a store made here, or undefined. */
export function adapterOf(store: unknown): StoreAdapter | undefined {
  return adapters.get(store as SqliteStore)
}

function sqlite(): typeof import('node:sqlite') {
  try {
    return createRequire(import.meta.url)('node:sqlite') as typeof import('node:sqlite')
  } catch {
    const version = (globalThis as {process?: {versions?: {node?: string}}}).process?.versions?.node ?? 'unknown'
    throw {
      class: 'bad_input',
      field: 'store',
      message: `\`store\`: expected a Node with node:sqlite (22.5 or later; 22.5 to 22.12 need --experimental-sqlite), got Node ${version}: leave \`store\` out to keep the state in memory`,
    }
  }
}

/**
 * A SQLite store at `path` (made if missing), e.g. `/data/sanity-fly-sync.db` on a Fly Volume mounted at /data, or
 * a file in the LiteFS mount (with `litefs` on the receiver). Throws a `{class, field, message}` error on a Node
 * without node:sqlite.
 */
export function sqliteStore(path: string): SqliteStore {
  const {DatabaseSync} = sqlite()
  const db = new DatabaseSync(path)
  // Durable at each commit, against a crash of the process and of the Machine.
  db.exec('PRAGMA journal_mode = WAL')
  db.exec('PRAGMA synchronous = FULL')
  db.exec('PRAGMA busy_timeout = 5000')
  const run = ({sql, params}: Statement) => db.prepare(sql).run(...params)
  const adapter: StoreAdapter = {
    exec: (statements) => {
      for (const statement of JSON.parse(statements) as Statement[]) run(statement)
    },
    all: (statement) => {
      const {sql, params} = JSON.parse(statement) as Statement
      return JSON.stringify(db.prepare(sql).all(...params))
    },
    begin: () => db.exec('BEGIN IMMEDIATE'),
    commit: () => db.exec('COMMIT'),
    rollback: () => {
      try {
        db.exec('ROLLBACK')
      } catch {
        // No transaction open (it was committed, or never begun).
      }
    },
  }
  const store: SqliteStore = {kind: 'sqlite', path, db, close: () => db.close()}
  adapters.set(store, adapter)
  return store
}
