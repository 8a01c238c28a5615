// A roll longer than one run, under Sanity's own CLI: the Function restarts what its budget allows, leaves the rest
// recorded on the Machines, and hands it on with `context.invoke` to the resume Function the blueprint helper
// declares (flySyncResumeFunction); that run finishes the roll. Checked on the local Fly's own records: every
// Machine restarted exactly once, its mark done, no lease left. Needs `npm run build`.
import {after, before, test} from 'node:test'
import assert from 'node:assert/strict'
import {copyFileSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {startFleet} from '../../local/fly/fleet.mjs'
import {DEFAULT_TOKEN} from '../../local/fly/machines-api.mjs'
import {childEnv, ROOT, sanityRun} from './support/run.mjs'

const SECRET = 'continuation-sync-secret-0123456789'
const MACHINES = 8

// A team blueprint with both resources from the helper; 40 s timeout: the core's budget is 20 s.
const BLUEPRINT = `import {defineBlueprint} from '@sanity/blueprints'
import {flySyncFunction, flySyncResumeFunction} from './helper/index.ts'

const options = {app: 'web', types: ['siteSettings'], restartTypes: ['siteSettings'], timeout: 40, src: 'fn'}
export default defineBlueprint({resources: [flySyncFunction(options), flySyncResumeFunction(options)]})
`

/** Acknowledges every push with its own Machine id. */
const receiver = (machine) => async () => Response.json({protocol: 'sanity-fly-sync/1', machine: machine.env.FLY_MACHINE_ID, status: 'applied', restart: null})

let fleet
let project
before(async () => {
  fleet = await startFleet({
    machines: Array.from({length: MACHINES}, () => ({region: 'ord'})),
    latencyMs: {ord: 2},
    handlerFor: receiver,
    // About 3 s a restart, one at a time: eight do not fit one 20 s budget.
    apiOptions: {timings: {stopMs: [1200, 1400], startMs: [1300, 1500], checksCriticalMs: 200}},
  })
  project = mkdtempSync(join(tmpdir(), 'fly-sync-continuation-'))
  mkdirSync(join(project, 'fn'))
  for (const file of ['index.js', 'sanity_fly_sync_bg.wasm']) copyFileSync(join(ROOT, 'dist/functions/fly-sync', file), join(project, 'fn', file))
  symlinkSync(join(ROOT, 'blueprint'), join(project, 'helper'), 'dir')
  mkdirSync(join(project, 'node_modules/@sanity'), {recursive: true})
  symlinkSync(join(ROOT, 'node_modules/@sanity/blueprints'), join(project, 'node_modules/@sanity/blueprints'), 'dir')
  writeFileSync(join(project, 'package.json'), JSON.stringify({name: 'continuation', private: true, type: 'module'}))
  writeFileSync(join(project, 'sanity.blueprint.ts'), BLUEPRINT)
})
after(async () => {
  await fleet?.close()
  if (project) rmSync(project, {recursive: true, force: true})
})

test('a roll longer than the budget: the rest is recorded on the Machines and the resume Function finishes it', {timeout: 120_000}, async () => {
  const settings = {_id: 'siteSettings', _type: 'siteSettings', _rev: 'r2', _updatedAt: new Date().toISOString(), title: 'New'}
  writeFileSync(join(project, 'settings.json'), JSON.stringify(settings))
  const env = childEnv({FLY_API_URL: fleet.api.url, FLY_APP_URL: fleet.url, FLY_API_TOKEN: `FlyV1 ${DEFAULT_TOKEN}`, FLY_SYNC_SECRET: SECRET})
  const r = await sanityRun(['functions', 'test', 'fly-sync', '--file', 'settings.json', '--json'], {cwd: project, env, timeoutMs: 110_000})
  assert.equal(r.code, 0, r.output)
  const {response, logs} = JSON.parse(r.output.slice(r.output.indexOf('{')))
  // The first run: some restarted, the rest left (recorded), handed on.
  assert.ok(response.ok && response.resumable > 0 && response.resumable < MACHINES, JSON.stringify(response))
  assert.deepEqual(response.resumeWith, {function: 'fly-sync-resume', data: {sanityFlySync: 'resume'}})
  assert.match(logs, /"action":"resume","function":"fly-sync-resume","invoked":true/)
  // The resume run finished it: every Machine restarted exactly once, marked done, no lease left.
  for (const m of fleet.machines()) {
    const seen = fleet.api.machine(m.id)
    assert.equal(seen.counts.restarts, 1, `${m.id} restarted exactly once`)
    assert.match(seen.metadata.sanity_fly_sync_restart, /^1;done;siteSettings@r2;\d+$/)
    assert.equal(seen.lease, null)
  }
  // Never two down at once (one region of eight, one at a time), by the emulator's own timeline.
  let down = 0
  let most = 0
  for (const e of fleet.api.stateLog) {
    if (e.cause !== 'restart' && e.cause !== 'start') continue
    down += e.state === 'stopping' ? 1 : e.state === 'started' ? -1 : 0
    most = Math.max(most, down)
  }
  assert.equal(most, 1)
})
