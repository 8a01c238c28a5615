// sanity.blueprint.ts as data: the event, the time limits, and that its env agrees with what src/config.rs reads
// (no unknown names, every variable documented, no secret committed).
import {test} from 'node:test'
import assert from 'node:assert/strict'
import {existsSync, readFileSync} from 'node:fs'
import {join} from 'node:path'
import blueprintModule, {BUDGET_MS, FUNCTION_NAME, SYNCED_TYPES, TIMEOUT_SECONDS} from '../../sanity.blueprint.ts'
import {ROOT} from './support/run.mjs'

const blueprint = blueprintModule()
const [fn, resume, tags] = blueprint.resources
const SECRETS = ['FLY_API_TOKEN', 'FLY_SYNC_SECRET', 'SANITY_WEBHOOK_SECRET', 'SANITY_API_READ_TOKEN']

/** Variable names the core reads: string literals in src/config.rs outside its tests. */
function configVariables() {
  const source = readFileSync(join(ROOT, 'src/config.rs'), 'utf8').split('#[cfg(test)]')[0]
  return [...new Set(source.match(/"(?:FLY|SANITY)_[A-Z_]+"/g).map((s) => s.slice(1, -1)))].sort()
}

test('one document Function, fly-sync, on create/update/delete, from the prebuilt bundle', () => {
  assert.equal(blueprint.resources.length, 3, 'fly-sync, its resume Function and its sync-tag Function')
  assert.equal(fn.type, 'sanity.function.document')
  assert.equal(fn.name, FUNCTION_NAME)
  assert.equal(fn.name, 'fly-sync')
  assert.deepEqual(fn.event.on, ['create', 'update', 'delete'])
  assert.equal(fn.src, 'dist/functions/fly-sync')
  assert.ok(existsSync(join(ROOT, fn.src, 'index.js')), 'run `npm run build` first')
  assert.equal(fn.event.includeDrafts, undefined)
  assert.equal(fn.event.includeAllVersions, undefined)
})

test('the resume Function: a pubsub Function on the same code, configuration and limits, named in fly-sync\'s env', () => {
  assert.equal(resume.type, 'sanity.function.pubsub')
  assert.equal(resume.name, 'fly-sync-resume')
  assert.equal(fn.env.FLY_SYNC_RESUME_FUNCTION, resume.name, 'the name fly-sync hands unfinished rolls to')
  assert.equal(resume.src, fn.src)
  assert.deepEqual(resume.env, fn.env)
  assert.equal(resume.timeout, fn.timeout)
  assert.equal(resume.event, undefined, 'invoked by a run, not by documents')
})

test('the sync-tag Function: Sanity\'s sync-tag-invalidate event, the same code and configuration, a short budget', () => {
  assert.equal(tags.type, 'sanity.function.sync-tag-invalidate')
  assert.equal(tags.name, 'fly-sync-tags')
  assert.equal(tags.src, fn.src)
  assert.deepEqual({...tags.env, FLY_SYNC_BUDGET_MS: fn.env.FLY_SYNC_BUDGET_MS}, fn.env, 'only the budget differs')
  assert.ok(Number(tags.env.FLY_SYNC_BUDGET_MS) + 10_000 <= tags.timeout * 1000)
})

test('the filter names every synced type and excludes drafts and versions', () => {
  assert.ok(SYNCED_TYPES.length > 0)
  assert.ok(fn.event.filter.startsWith(`_type in ${JSON.stringify(SYNCED_TYPES)}`), fn.event.filter)
  assert.match(fn.event.filter, /!\(_id in path\("drafts\.\*\*"\)\)/)
  assert.match(fn.event.filter, /!\(_id in path\("versions\.\*\*"\)\)/)
})

test('the projection carries what the core reads', () => {
  const p = fn.event.projection.replace(/\s+/g, ' ')
  assert.match(p, /^\{ \.\.\.,/, 'spread of the document first, so the named fields win')
  for (const field of ['_id', '_type', '_rev', '_updatedAt', 'cacheTags', 'market']) assert.match(p, new RegExp(`\\b${field}\\b`))
  assert.match(p, /"op": delta::operation\(\)/)
  assert.match(p, /"slug": slug\.current/)
  assert.match(p, /"previousSlug": before\(\)\.slug\.current/)
  assert.match(p, /"locale": language/)
})

test('the core budget ends well before the Function timeout', () => {
  assert.equal(fn.timeout, TIMEOUT_SECONDS)
  assert.equal(fn.env.FLY_SYNC_BUDGET_MS, String(BUDGET_MS))
  assert.ok(BUDGET_MS > 25_000, 'more than the core default: room for a rolling restart')
  assert.ok(BUDGET_MS + 10_000 <= fn.timeout * 1000, `budget ${BUDGET_MS} ms vs timeout ${fn.timeout} s`)
  assert.equal(typeof fn.memory, 'number')
})

test('env: only variables the core reads, no secrets, every variable documented in the file', () => {
  const known = configVariables()
  assert.ok(known.includes('FLY_APP_NAME') && known.includes('FLY_SYNC_BUDGET_MS'), known.join(' '))
  for (const [name, value] of Object.entries(fn.env)) {
    assert.ok(known.includes(name), `${name} is not read by src/config.rs`)
    assert.equal(typeof value, 'string')
    assert.ok(!SECRETS.includes(name), `${name} is a secret: set it with \`functions env add\``)
  }
  const text = readFileSync(join(ROOT, 'sanity.blueprint.ts'), 'utf8')
  for (const name of known) assert.ok(text.includes(name), `${name} (src/config.rs) is not documented in sanity.blueprint.ts`)
  for (const name of SECRETS) assert.match(text, new RegExp(`functions env add fly-sync ${name}|${name}\\s+secret`))
})
