// The Function's blueprint resource for a team's own sanity.blueprint.ts: one line beside their other resources.
//
//   import {flySyncFunction} from 'sanity-fly-sync/blueprint'
//   export default defineBlueprint({resources: [
//     …their own Functions…,
//     flySyncFunction({app: 'my-fly-app', types: ['post'], routes: {post: '/posts/{slug}'}}),
//   ]})
//
// It returns what `defineDocumentFunction` makes of the Function: the events (create, update, delete of published
// documents of `types`), the projection the core reads, the time limits and the non-secret configuration. `src`
// points at the prebuilt Function inside the installed package (one ESM file, the wasm inlined), so the CLI neither
// transpiles nor installs anything. Secrets never go here: `sanity functions env add <name> FLY_API_TOKEN …`.
// This repository's own sanity.blueprint.ts is built with it too.
import {defineDocumentFunction, definePubSubFunction, defineSyncTagInvalidateFunction} from '@sanity/blueprints'

export const DEFAULT_NAME = 'fly-sync'
/** Where npm puts the prebuilt Function, relative to the blueprint's folder (override with `src`). */
export const DEFAULT_SRC = 'node_modules/sanity-fly-sync/function'
/**
 * Seconds. Sanity's default (10 s) is too short for a rolling restart: each restarted Machine must come back
 * `started` with passing checks, one batch at a time. The limit only caps a run; a content sync ends in well under
 * a second, and only the time used is billed.
 */
export const DEFAULT_TIMEOUT_SECONDS = 120
/**
 * Seconds between the core's own deadline (FLY_SYNC_BUDGET_MS) and the Function's timeout: a cold start, compiling
 * the wasm, one request still in flight at the deadline (FLY_SYNC_REQUEST_TIMEOUT_MS) and logging the report.
 */
export const BUDGET_HEADROOM_SECONDS = 20
const MIN_TIMEOUT_SECONDS = 30
const MAX_TIMEOUT_SECONDS = 900
/** Set with `functions env add`, never in a blueprint (it is committed and deployed as plain text). */
const SECRETS = ['FLY_API_TOKEN', 'FLY_SYNC_SECRET', 'SANITY_WEBHOOK_SECRET', 'SANITY_API_READ_TOKEN']

/**
 * What the core reads (src/event.rs): the whole document (`...`) for the app to render, then the fields that steer
 * the sync. `op` and `previousSlug` are not passed on as document fields. For a delete the projection sees the
 * document as it was, so `previousSlug` is its slug and the app gets every old route. `locale` comes from
 * `language`, the field @sanity/document-internationalization writes.
 */
export const PROJECTION = `{
  ...,
  _id, _type, _rev, _updatedAt, cacheTags, market,
  "op": delta::operation(),
  "slug": slug.current,
  "previousSlug": before().slug.current,
  "locale": language
}` as const

/** Published documents of `types` only: a draft or a release version must never reach the live site. */
export function filterFor(types: readonly string[]): string {
  return [`_type in ${JSON.stringify(types)}`, '!(_id in path("drafts.**"))', '!(_id in path("versions.**"))'].join(' && ')
}

export interface FlySyncFunctionOptions {
  /** The Fly app whose started Machines receive each change (FLY_APP_NAME), as in `fly apps list`. */
  app?: string
  /** The document types to sync: the Function fires for these only. */
  types: readonly string[]
  /**
   * Route templates per type (FLY_SYNC_ROUTES), for the app to revalidate: `{post: '/posts/{slug}', page:
   * ['/{slug}', '/{locale}/{slug}']}`. Placeholders {slug} {id} {type} {locale} {market}. A rename sends old and
   * new routes, a delete every old one.
   */
  routes?: Readonly<Record<string, string | readonly string[]>>
  /** Types whose change needs a rolling restart (FLY_RESTART_TYPES), e.g. settings read at boot. */
  restartTypes?: readonly string[]
  /**
   * The published documents that reference a changed one (a post shows its author) ride in its push, so their
   * pages are refreshed too: one query to Sanity per level. `depth` levels of references (0–3, default 1), at
   * most `cap` documents (1–1000, default 50; the rest are covered by their types' tags), of `types` only (default
   * any). `false` turns the lookup off. List the referenced types (an author, a category) in `types` too: the
   * Function fires only for those.
   */
  dependents?: false | {depth?: number; cap?: number; types?: readonly string[]}
  /**
   * The robot token the Function runs with (`'$.resources.<name>'` of a `defineRobotToken` in the same blueprint):
   * the dependents query reads the dataset with it. Without one a private dataset answers that query with nothing.
   */
  robotToken?: string
  /** The Function's name (`functions test <name>`, `functions env add <name> …`). Default `fly-sync`. */
  name?: string
  displayName?: string
  /** Seconds, 30–900 (default 120). The core's budget is set 20 s below it. */
  timeout?: number
  /** GB (default 1, Sanity's default). */
  memory?: number
  /**
   * Any other variable the core reads (README, "Configuration"): FLY_MAX_UNAVAILABLE, FLY_SYNC_PATH,
   * FLY_SYNC_CONFIG for several targets (then `app` and `routes` are not used)… Not secrets.
   */
  env?: Readonly<Record<string, string>>
  /** The Function's folder, relative to the blueprint's. Default: the prebuilt one in node_modules. */
  src?: string
}

/** An option that is not what was expected. Never echoes the value. */
function expected(field: string, what: string, got: string): Error {
  return new Error(`sanity-fly-sync/blueprint: \`${field}\`: expected ${what}, got ${got}`)
}

const kind = (v: unknown) => (v === undefined || v === null ? 'nothing' : Array.isArray(v) ? 'a list' : `a ${typeof v}`)

function stringList(field: string, value: unknown, required: boolean): string[] {
  const what = 'a list of document type names'
  if (value === undefined && !required) return []
  if (!Array.isArray(value)) throw expected(field, what, kind(value))
  if (required && value.length === 0) throw expected(field, `a non-empty ${what.slice(2)}`, 'an empty list')
  value.forEach((t, i) => {
    if (typeof t !== 'string' || t.trim() === '') throw expected(`${field}[${i}]`, 'a document type name', typeof t === 'string' ? 'an empty string' : kind(t))
  })
  return value
}

/** FLY_SYNC_DEPENDENTS_DEPTH, _CAP, FLY_SYNC_DEPENDENT_TYPES; the core checks the ranges when it starts. */
function dependentsEnv(dependents: FlySyncFunctionOptions['dependents']): Record<string, string> {
  if (dependents === undefined) return {}
  if (dependents === false) return {FLY_SYNC_DEPENDENTS_DEPTH: '0'}
  if (typeof dependents !== 'object' || dependents === null || Array.isArray(dependents)) {
    throw expected('dependents', '`false` or an object {depth, cap, types}', kind(dependents))
  }
  const out: Record<string, string> = {}
  for (const [key, variable, min, max] of [['depth', 'FLY_SYNC_DEPENDENTS_DEPTH', 0, 3], ['cap', 'FLY_SYNC_DEPENDENTS_CAP', 1, 1000]] as const) {
    const value = dependents[key]
    if (value === undefined) continue
    if (!Number.isInteger(value) || value < min || value > max) throw expected(`dependents.${key}`, `a whole number from ${min} to ${max}`, typeof value === 'number' ? 'another number' : kind(value))
    out[variable] = String(value)
  }
  const types = stringList('dependents.types', dependents.types, false)
  if (types.length) out.FLY_SYNC_DEPENDENT_TYPES = types.join(',')
  return out
}

/** FLY_SYNC_ROUTES: `type=/a/{slug}|/b/{slug},type2=…`. The core checks each template when it starts. */
function routesEnv(routes: FlySyncFunctionOptions['routes'], types: string[]): string | undefined {
  if (routes === undefined) return undefined
  if (typeof routes !== 'object' || routes === null || Array.isArray(routes)) throw expected('routes', 'an object of type → route templates', kind(routes))
  const entries: string[] = []
  for (const [type, value] of Object.entries(routes)) {
    if (!types.includes(type)) throw expected(`routes.${type}`, `a type listed in \`types\``, 'a type the Function does not sync')
    const list = typeof value === 'string' ? [value] : value
    if (!Array.isArray(list) || list.length === 0) throw expected(`routes.${type}`, 'a route template or a non-empty list of them', kind(value))
    list.forEach((template, i) => {
      if (typeof template !== 'string' || !template.startsWith('/')) throw expected(`routes.${type}[${i}]`, 'a path template starting with `/`', kind(template))
      if (/[,|]/.test(template)) throw expected(`routes.${type}[${i}]`, 'a path template without `,` or `|`', 'one with a separator')
    })
    entries.push(`${type}=${list.join('|')}`)
  }
  return entries.length ? entries.join(',') : undefined
}

/**
 * The Function's resource, made by `defineDocumentFunction` (from your @sanity/blueprints). Throws an Error naming
 * the option for a bad one.
 */
export function flySyncFunction(options: FlySyncFunctionOptions) {
  if (typeof options !== 'object' || options === null) throw expected('options', 'an object', kind(options))
  const types = stringList('types', options.types, true)
  const restartTypes = stringList('restartTypes', options.restartTypes, false)
  const env = {...options.env}
  for (const [key, value] of Object.entries(env)) {
    if (SECRETS.includes(key)) throw expected(`env.${key}`, `no secret in a blueprint (set it with \`sanity functions env add ${options.name ?? DEFAULT_NAME} ${key} …\`)`, 'a value')
    if (typeof value !== 'string') throw expected(`env.${key}`, 'a string', kind(value))
  }
  const several = env.FLY_SYNC_CONFIG !== undefined
  for (const field of ['app', 'routes', 'restartTypes'] as const) {
    if (several && options[field] !== undefined) throw expected(field, 'nothing beside `env.FLY_SYNC_CONFIG` (its targets carry it)', 'a value')
  }
  if (!several && (typeof options.app !== 'string' || options.app.trim() === '')) {
    throw expected('app', 'the Fly app to sync (or `env.FLY_SYNC_CONFIG` for several targets)', kind(options.app))
  }
  const timeout = options.timeout ?? DEFAULT_TIMEOUT_SECONDS
  if (!Number.isInteger(timeout) || timeout < MIN_TIMEOUT_SECONDS || timeout > MAX_TIMEOUT_SECONDS) {
    throw expected('timeout', `whole seconds from ${MIN_TIMEOUT_SECONDS} to ${MAX_TIMEOUT_SECONDS}`, typeof timeout === 'number' ? 'another number' : kind(timeout))
  }
  const routes = routesEnv(options.routes, types)
  const dependents = dependentsEnv(options.dependents)
  if (options.robotToken !== undefined && (typeof options.robotToken !== 'string' || options.robotToken.trim() === '')) {
    throw expected('robotToken', "a robot token reference ('$.resources.<name>')", kind(options.robotToken))
  }
  const name = options.name ?? DEFAULT_NAME

  return defineDocumentFunction({
    name,
    displayName: options.displayName ?? 'Sync content to Fly Machines',
    src: options.src ?? DEFAULT_SRC,
    runtime: 'nodejs24.x',
    timeout,
    memory: options.memory ?? 1,
    ...(options.robotToken ? {robotToken: options.robotToken} : {}),
    event: {
      // Explicit: the default (`publish`) misses deletes, and renames need `update` with before().
      on: ['create', 'update', 'delete'],
      filter: filterFor(types),
      projection: PROJECTION,
    },
    env: {
      ...(several ? {} : {FLY_APP_NAME: options.app!.trim()}),
      ...(routes ? {FLY_SYNC_ROUTES: routes} : {}),
      ...(restartTypes.length ? {FLY_RESTART_TYPES: restartTypes.join(',')} : {}),
      ...dependents,
      FLY_SYNC_BUDGET_MS: String((timeout - BUDGET_HEADROOM_SECONDS) * 1000),
      // The Function a run hands an unfinished roll to (flySyncResumeFunction below).
      FLY_SYNC_RESUME_FUNCTION: resumeName(name),
      ...env,
    },
  })
}

const resumeName = (name: string) => `${name}-resume`

/**
 * The resume Function: the same prebuilt code and configuration as `flySyncFunction(options)`, invoked by a run
 * that had to leave a rolling restart unfinished (its time ran out), so the roll goes on without waiting for the
 * next edit. Add it beside the other with the same options (and the same secrets, `functions env add <name>-resume`).
 * Without it nothing is lost: what each Machine still owes is recorded on it, and the next run finishes it.
 */
export function flySyncResumeFunction(options: FlySyncFunctionOptions) {
  const main = flySyncFunction(options)
  return definePubSubFunction({
    name: resumeName(main.name),
    displayName: 'Finish a rolling restart on Fly Machines',
    src: main.src,
    runtime: main.runtime,
    timeout: main.timeout,
    memory: main.memory,
    ...(main.robotToken ? {robotToken: main.robotToken} : {}),
    env: main.env,
  })
}

/**
 * Seconds a sync-tag run may take, all Machines included (FLY_SYNC_BUDGET_MS of the sync-tag Function). Sanity's
 * clients waiting on live content wait for the run's `done`: a Machine that cannot be reached in this time is
 * reported, not waited for.
 */
export const SYNC_TAG_BUDGET_SECONDS = 10

/**
 * The sync-tag Function: Sanity's sync-tag-invalidate event (the tags its Live Content API returned with query
 * results, now stale) pushed, signed, to every started Machine, whose receiver hands them to the app (the Next kit
 * revalidates them as next-sanity's `sanityFetch` tags its cache). The same prebuilt code and configuration as
 * `flySyncFunction(options)`; it never restarts anything, and calls `done` when every Machine has answered or its
 * budget is over. Add it beside the other for an app that uses next-sanity's `<SanityLive>` (README).
 */
export function flySyncTagFunction(options: FlySyncFunctionOptions) {
  const main = flySyncFunction(options)
  return defineSyncTagInvalidateFunction({
    name: `${main.name}-tags`,
    displayName: 'Push Sanity sync tags to Fly Machines',
    src: main.src,
    runtime: main.runtime,
    timeout: SYNC_TAG_BUDGET_SECONDS + BUDGET_HEADROOM_SECONDS,
    memory: main.memory,
    ...(main.robotToken ? {robotToken: main.robotToken} : {}),
    env: {...main.env, FLY_SYNC_BUDGET_MS: String(SYNC_TAG_BUDGET_SECONDS * 1000)},
  })
}
