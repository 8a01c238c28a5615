// Run by tests/node/receiver-crash.test.mjs in a child process that the test kills with SIGKILL: a Fly app whose
// receiver keeps its state in SQLite (sqliteStore) and its own content in the same database, catching up from a
// local Content Lake. Each hook prints where it is (one JSON line) before it does anything; at the point named by
// KILL_AT (`<hook stage>@<id>@<web | catch-up>`: a push's or a catch-up run's) it stops there (awaits forever) so
// the test can kill the process mid-apply.
import {createServer} from 'node:http'
import {createReceiver, sqliteStore} from '../../../receiver/index.ts'
import {nodeListener} from '../../../receiver/kits/node.ts'

const {DB, SECRET, KILL_AT = '', LAKE_URL, LAKE_TOKEN} = process.env
const say = (line) => console.log(JSON.stringify(line))
const never = new Promise(() => {})

const store = sqliteStore(DB)
// The app's own content, in the same database: written inside each change's transaction.
store.db.exec('CREATE TABLE IF NOT EXISTS content (id TEXT PRIMARY KEY, rev TEXT NOT NULL, title TEXT)')
store.db.exec('CREATE TABLE IF NOT EXISTS applied (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, rev TEXT NOT NULL, op TEXT NOT NULL, via TEXT NOT NULL)')

function stage(name, change) {
  say({at: name, id: change.id, rev: change.rev, op: change.op, via: change.target})
  return KILL_AT === `${name}@${change.id}@${change.target}` ? never : undefined
}

const receiver = createReceiver({
  secret: SECRET,
  machineId: 'crash-machine',
  store,
  hookTimeoutMs: 120_000,
  async apply(change) {
    await stage('apply:start', change)
    if (change.op === 'delete') store.db.prepare('DELETE FROM content WHERE id = ?').run(change.id)
    else store.db.prepare('INSERT OR REPLACE INTO content (id, rev, title) VALUES (?, ?, ?)').run(change.id, change.rev, change.document?.title ?? null)
    store.db.prepare('INSERT INTO applied (id, rev, op, via) VALUES (?, ?, ?, ?)').run(change.id, change.rev, change.op, change.target)
    await stage('apply:written', change)
  },
  async invalidate(_routes, _tags, change) {
    await stage('invalidate', change)
  },
  catchUp: {projectId: 'local', dataset: 'production', apiHost: LAKE_URL, token: LAKE_TOKEN, types: ['page'], intervalSeconds: 3600, lagSeconds: 5},
})

const server = createServer(nodeListener(receiver))
server.listen(0, '127.0.0.1', () => say({listening: server.address().port}))
receiver.ready.then((run) => say({ready: run}))
