// LiteFS mode on the local fleet (issue 15): the receivers keep their state and the app its content in SQLite on
// a LiteFS mount (local/litefs.mjs stands in for LiteFS: a `.primary` file on each replica, replication with a
// delay), and the real Function handler pushes with `fanOut: "litefs"`. Only the primary applies; every replica
// purges its caches only once the change has replicated to it, answering 503 with Retry-After until then, which
// the Function retries without reading the Machine.
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {startMachinesApi, DEFAULT_TOKEN} from '../../local/fly/machines-api.mjs'
import {startFleet} from '../../local/fly/fleet.mjs'
import {startLiteFs} from '../../local/litefs.mjs'
import {createReceiver, sqliteStore} from '../../receiver/index.ts'
import {handler} from '../../function.ts'

const SECRET = 'litefs-sync-secret-0123456789'

test('fanOut litefs: the primary applies once; each replica invalidates once its replica holds the change', {timeout: 60_000}, async () => {
  const root = mkdtempSync(join(tmpdir(), 'fly-sync-litefs-'))
  const api = await startMachinesApi({apps: {web: {machines: 4, regions: ['ord', 'fra']}}})
  const ids = api.machines('web').map((m) => m.id).sort()
  // Replication takes 400 ms; a replica waits 50 ms for it before it answers 503 (retryable).
  const litefs = startLiteFs({root, machines: ids, primary: ids[0], delayMs: 400})
  const applied = []
  const invalidated = []
  const stores = []
  const fleet = await startFleet({
    api,
    app: 'web',
    handlerFor: (machine) => {
      const store = sqliteStore(litefs.dbFor(machine.id))
      stores.push(store)
      // Only the primary writes (on a replica LiteFS refuses): the app's table replicates from it.
      if (litefs.isPrimary(machine.id)) store.db.exec('CREATE TABLE IF NOT EXISTS content (id TEXT PRIMARY KEY, rev TEXT NOT NULL)')
      const receiver = createReceiver({
        secret: SECRET,
        machineId: machine.id,
        store,
        litefs: {dir: litefs.dirFor(machine.id), replicationWaitMs: 50},
        apply(change) {
          applied.push({machine: machine.id, id: change.id, rev: change.rev})
          store.db.prepare('INSERT OR REPLACE INTO content (id, rev) VALUES (?, ?)').run(change.id, change.rev)
        },
        invalidate(_routes, _tags, change) {
          const held = store.db.prepare('SELECT rev FROM content WHERE id = ?').get(change.id)
          invalidated.push({machine: machine.id, id: change.id, rev: change.rev, held: held?.rev ?? null})
        },
      })
      return (request) => receiver(request)
    },
  })
  const saved = {...process.env}
  Object.assign(process.env, {
    FLY_SYNC_CONFIG: JSON.stringify({targets: [{app: 'web', machinesApiUrl: api.url, appUrl: fleet.url, fanOut: 'litefs', routes: {page: ['/{slug}']}}]}),
    FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`,
    FLY_SYNC_SECRET: SECRET,
    FLY_SYNC_BUDGET_MS: '20000',
  })
  const logs = []
  const log = console.log
  console.log = (line) => logs.push(JSON.parse(line))
  try {
    const at = new Date(Date.now() - 60_000).toISOString()
    const report = await handler({context: {local: true}, event: {data: {_id: 'page-1', _type: 'page', _rev: 'r1', _updatedAt: at, slug: {current: 'hello'}, title: 'Hello'}}})
    console.log = log
    assert.equal(report.ok, true, JSON.stringify(report))
    const t = report.targets[0]
    assert.deepEqual(t.machines.map((m) => m.sync), ['synced', 'synced', 'synced', 'synced'])
    assert.deepEqual(applied, [{machine: ids[0], id: 'page-1', rev: 'r1'}], 'only the primary applied')
    assert.equal(invalidated.length, 4, 'every Machine purged its caches')
    for (const i of invalidated) assert.equal(i.held, 'r1', `${i.machine} purged only once its replica held r1`)
    // One log line per batch: a lone request names its `machine`, a fan-out its `machines`.
    const pushes = (id) => logs.filter((l) => l.action === 'send' && l.kind === 'sync' && (l.machine === id || l.machines?.includes(id))).length
    assert.equal(pushes(ids[0]), 1)
    for (const id of ids.slice(1)) assert.ok(pushes(id) >= 2, `replica ${id} answered 503 before replication and was asked again (${pushes(id)})`)
    assert.equal(logs.filter((l) => l.action === 'send' && l.kind === 'check').length, 0, 'no Machine was read for it')
    assert.ok(litefs.stats.copies >= 1)
  } finally {
    console.log = log
    for (const key of Object.keys(process.env)) if (!(key in saved)) delete process.env[key]
    Object.assign(process.env, saved)
    await fleet.close()
    await api.close()
    litefs.close()
    for (const s of stores) s.close()
    rmSync(root, {recursive: true, force: true})
  }
})
