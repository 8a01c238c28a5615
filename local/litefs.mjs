// A stand-in for LiteFS on the local fleet: one mount directory per Machine, a `.primary` file on each replica (it
// holds the primary's hostname, as LiteFS writes it: absent on the primary), and replication with a delay: whenever
// a transaction commits on the primary's database, its tables are copied into every replica's `delayMs` later, in
// one transaction per replica. The primary is static (LiteFS's `static` lease: one candidate). Needs node:sqlite.
import {mkdirSync, rmSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {createRequire} from 'node:module'

const {DatabaseSync} = createRequire(import.meta.url)('node:sqlite')

/** The database file name inside each mount. */
export const DB_FILE = 'sync.db'

/**
 * @param {{root: string, machines: string[], primary: string, app?: string, delayMs?: number, pollMs?: number}} options
 */
export function startLiteFs({root, machines, primary, app = 'web', delayMs = 150, pollMs = 10}) {
  if (!machines.includes(primary)) throw new Error(`litefs: the primary ${primary} is not among the Machines`)
  const dirFor = (id) => join(root, id)
  const dbFor = (id) => join(dirFor(id), DB_FILE)
  for (const id of machines) {
    mkdirSync(dirFor(id), {recursive: true})
    if (id !== primary) writeFileSync(join(dirFor(id), '.primary'), `${primary}.vm.${app}.internal\n`)
  }
  const source = new DatabaseSync(dbFor(primary))
  source.exec('PRAGMA journal_mode = WAL')
  const replicas = new Map(machines.filter((id) => id !== primary).map((id) => [id, new DatabaseSync(dbFor(id))]))
  for (const db of replicas.values()) db.exec('PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000')
  let version = -1
  let closed = false
  const pending = new Set()
  const stats = {snapshots: 0, copies: 0}
  /** Resolved at the next copy to the replicas. */
  let waiting = []

  /** Every table of the primary as it is now. */
  function snapshot() {
    const tables = source.prepare("SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").all()
    return tables.map(({name, sql}) => ({name, sql: sql.replace(/^CREATE TABLE /i, 'CREATE TABLE IF NOT EXISTS '), rows: source.prepare(`SELECT * FROM "${name}"`).all()}))
  }

  function copy(db, tables) {
    db.exec('BEGIN IMMEDIATE')
    try {
      for (const {name, sql, rows} of tables) {
        db.exec(sql)
        db.exec(`DELETE FROM "${name}"`)
        for (const row of rows) {
          const columns = Object.keys(row)
          db.prepare(`INSERT INTO "${name}" (${columns.map((c) => `"${c}"`).join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`).run(...Object.values(row))
        }
      }
      db.exec('COMMIT')
      stats.copies += 1
    } catch (error) {
      db.exec('ROLLBACK')
      throw error
    }
  }

  const timer = setInterval(() => {
    if (closed) return
    // A commit by another connection changes the primary's data_version.
    const now = source.prepare('PRAGMA data_version').get().data_version
    if (now === version) return
    version = now
    const tables = snapshot()
    stats.snapshots += 1
    const later = setTimeout(() => {
      pending.delete(later)
      if (closed) return
      for (const db of replicas.values()) copy(db, tables)
      for (const resolve of waiting.splice(0)) resolve()
    }, delayMs)
    pending.add(later)
  }, pollMs)

  return {
    primary,
    stats,
    dirFor,
    dbFor,
    isPrimary: (id) => id === primary,
    /**
     * Resolves once every replica holds the primary's state as of now (LiteFS starts a replica's app only once it
     * has synced with the primary). Bounded by `ms`.
     */
    synced(ms = 5_000) {
      const now = source.prepare('PRAGMA data_version').get().data_version
      if (now === version && pending.size === 0) return Promise.resolve()
      return new Promise((resolve) => {
        const timer = setTimeout(resolve, ms)
        waiting.push(() => (clearTimeout(timer), resolve()))
      })
    },
    close() {
      closed = true
      clearInterval(timer)
      for (const t of pending) clearTimeout(t)
      source.close()
      for (const db of replicas.values()) db.close()
    },
    remove: () => rmSync(root, {recursive: true, force: true}),
  }
}
