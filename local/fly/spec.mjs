// Fly's Machines API OpenAPI document, and the request validator built from it (openapi-backend: routing +
// ajv validation of path, query, header and body against the spec).
//
// `fly-machines-openapi.json` here is Fly's published OpenAPI spec, unmodified, as served at
// https://docs.machines.dev/spec/openapi3.json on 2026-05-07 (sha256 45efe4aa…daeb). The spec leaves out a few things
// that Fly's own clients send; `SPEC_PATCHES` adds exactly those, each with its source, so that what flyctl /
// fly-go send also validates. The engine's own requests validate against the unpatched spec (see the tests).
import {readFileSync} from 'node:fs'
import {OpenAPIBackend} from 'openapi-backend'

export const SPEC_FILE = new URL('./fly-machines-openapi.json', import.meta.url)
export const SPEC_SHA256 = '45efe4aaecb2f7c0185831792cd7335528990a304bbbb7eb7e6f91725c53daeb'

/** The spec exactly as Fly publishes it (a fresh copy each call). */
export function loadRawSpec() {
  return JSON.parse(readFileSync(SPEC_FILE, 'utf8'))
}

const WAIT_STATES = ['started', 'stopped', 'suspended', 'destroyed', 'failed', 'settled']
const SIGNALS = ['SIGHUP', 'SIGINT', 'SIGQUIT', 'SIGKILL', 'SIGUSR1', 'SIGUSR2', 'SIGTERM']
const M = '/apps/{app_name}/machines/{machine_id}'

/** The lease nonce header as Fly's clients send it on guarded mutations. */
const nonceHeader = {
  name: 'fly-machine-lease-nonce',
  in: 'header',
  description: 'Lease nonce; required while the Machine is leased (local patch, fly-go flaps_machines.go)',
  schema: {type: 'string'},
}

/**
 * Where the published spec is silent or narrower than what Fly's own clients (fly-go, flyctl) send.
 * Each patch only widens what is accepted; nothing the spec accepts is rejected.
 * @type {{op: string, what: string, source: string, apply: (spec: any) => void}[]}
 */
export const SPEC_PATCHES = [
  {
    op: 'Machines_restart',
    what: 'query `force_stop` (boolean)',
    source: 'fly-go flaps.Restart always sends ?force_stop=true|false',
    apply: (spec) => spec.paths[`${M}/restart`].post.parameters.push({name: 'force_stop', in: 'query', schema: {type: 'boolean'}}),
  },
  {
    op: 'Machines_restart, Machines_start, Machines_stop',
    what: 'header `fly-machine-lease-nonce` (optional)',
    source: 'fly-go sends the nonce on start/stop/restart of a leased Machine; documentation only: the validator accepts undeclared headers anyway',
    apply: (spec) => {
      for (const action of ['restart', 'start', 'stop']) spec.paths[`${M}/${action}`].post.parameters.push({...nonceHeader})
    },
  },
  {
    op: 'Machines_create_lease',
    what: 'query `ttl` (integer seconds) and an optional body',
    source: 'fly-go AcquireLease sends no body and ?ttl=N; the spec marks the body required',
    apply: (spec) => {
      const op = spec.paths[`${M}/lease`].post
      op.parameters.push({name: 'ttl', in: 'query', description: 'seconds the lease will be valid', schema: {type: 'integer'}})
      op.requestBody.required = false
    },
  },
  {
    op: 'Machines_wait',
    what: '`state` as a comma-separated list or repeated',
    source: 'the spec says "supports repeated or comma-separated values" but types it as a single enum value',
    apply: (spec) => {
      const param = spec.paths[`${M}/wait`].get.parameters.find((/** @type {any} */ p) => p.name === 'state')
      const one = WAIT_STATES.join('|')
      param.schema = {
        anyOf: [
          {type: 'string', pattern: `^(${one})(,(${one}))*$`},
          {type: 'array', minItems: 1, items: {type: 'string', enum: WAIT_STATES}},
        ],
      }
    },
  },
]

/** The spec with `SPEC_PATCHES` applied. */
export function loadPatchedSpec() {
  const spec = loadRawSpec()
  for (const patch of SPEC_PATCHES) patch.apply(spec)
  return spec
}

/** The operations the emulator serves; their request validators are compiled up front. */
export const SERVED_OPERATIONS = [
  'Machines_list',
  'Machines_show',
  'Machines_restart',
  'Machines_start',
  'Machines_stop',
  'Machines_wait',
  'Machines_create_lease',
  'Machines_show_lease',
  'Machines_release_lease',
  'Machines_show_metadata',
  'Machines_get_metadata_key',
  'Machines_upsert_metadata',
  'Machines_delete_metadata',
]

/**
 * An initialised openapi-backend for `spec`. Every matched operation, validation failure, unknown path and wrong
 * method goes to `route(c, ctx)` — the context `ctx` is what `handleRequest(request, ctx)` was given — so one
 * backend can serve several emulators in a process. `quick` skips compiling request and response validators for
 * all ~80 operations (~6 s); the served ones are compiled here (~0.5 s), the rest on first use.
 *
 * @param {any} spec
 * @returns {Promise<OpenAPIBackend>}
 */
export async function createBackend(spec) {
  const backend = new OpenAPIBackend({definition: spec, apiRoot: '/v1', quick: true, coerceTypes: true, strict: false})
  /** @type {(c: any, ctx: any) => any} */
  const route = (c, ctx) => ctx.route(c)
  backend.register({notImplemented: route, validationFail: route, notFound: route, methodNotAllowed: route})
  await backend.init()
  for (const op of SERVED_OPERATIONS) backend.validator.getRequestValidatorsForOperation(op)
  return backend
}

/** @type {Promise<OpenAPIBackend> | null} */
let shared = null

/** The process-wide backend for the patched spec. */
export function sharedBackend() {
  shared ??= createBackend(loadPatchedSpec())
  return shared
}

/**
 * One line for a 400 body from ajv errors (anyOf noise dropped, duplicates merged).
 * @param {{instancePath?: string, message?: string, keyword?: string, params?: any}[] | null | undefined} errors
 */
export function describeValidationErrors(errors) {
  const lines = []
  for (const e of errors ?? []) {
    if (e.keyword === 'anyOf') continue
    const where = (e.instancePath ?? '').replace(/^\//, '').replaceAll('/', '.') || 'request'
    let message = e.message ?? 'is invalid'
    if (e.keyword === 'additionalProperties' && e.params?.additionalProperty) message = `has unknown parameter \`${e.params.additionalProperty}\``
    if (e.keyword === 'enum' && e.params?.allowedValues) message = `must be one of ${e.params.allowedValues.join(', ')}`
    lines.push(`${where} ${message}`)
  }
  return [...new Set(lines)].join('; ') || 'invalid request'
}

export {WAIT_STATES, SIGNALS}
