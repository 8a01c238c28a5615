// The Sanity Function that keeps every running Fly Machine of the app in step with the dataset.
//
// Build: `npm run build` (wasm core + `dist/functions/fly-sync/index.js`, the folder `src` names below).
// Try it offline: `npx sanity-run functions test fly-sync --file examples/events/article.json` (see README).
// Deploy (needs `npx @sanity/cli login` and a stack from `npx sanity-run blueprints init`): `npx sanity-run blueprints deploy`.
//
// Secrets are never written here (this file is committed and deployed as plain text). Set them per deployment:
//   npx sanity-run functions env add fly-sync FLY_API_TOKEN "$(fly tokens create deploy -a <app>)"
//   npx sanity-run functions env add fly-sync FLY_SYNC_SECRET "$(openssl rand -hex 32)"   # the same value in the Fly app
// (`sanity functions env add …` is the same command through the `sanity` CLI.)
import {defineBlueprint} from '@sanity/blueprints'
import {BUDGET_HEADROOM_SECONDS, flySyncFunction, flySyncResumeFunction, flySyncTagFunction, type FlySyncFunctionOptions} from './blueprint/index.ts'

// The same helper a team calls from its own blueprint (`sanity-fly-sync/blueprint`, README): the events, filter,
// projection and time limits live there, once. This file only names this repository's types, routes and knobs.

/** The document types that are synced to the Fly app. **Edit this list** for your schema. */
// person, category: no pages of their own; listed so an edit of one fires the Function, which refreshes its dependents.
export const SYNCED_TYPES = ['page', 'article', 'siteSettings', 'person', 'category'] as const

/** The Function's name (`functions test fly-sync`, `functions logs fly-sync`, `functions env add fly-sync`). */
export const FUNCTION_NAME = 'fly-sync'

/**
 * Seconds. Sanity's default is 10 s, too short for a rolling restart: each restarted Machine must come back
 * `started` with passing checks (tens of seconds), one batch at a time. The limit only caps a run: a plain sync
 * (list + one POST per Machine) ends in well under a second.
 */
export const TIMEOUT_SECONDS = 120

/**
 * The core's own deadline for the whole run, retries and restarts included (FLY_SYNC_BUDGET_MS, default 25 s).
 * It must end before Sanity kills the Function, so the report is still logged: 20 s are left for a cold start,
 * compiling the wasm, one request still in flight at the deadline (FLY_SYNC_REQUEST_TIMEOUT_MS) and the report.
 */
export const BUDGET_MS = (TIMEOUT_SECONDS - BUDGET_HEADROOM_SECONDS) * 1000

/** This repository's Function: the options both resources below share. */
const FLY_SYNC: FlySyncFunctionOptions = {
  name: FUNCTION_NAME,
  // Prebuilt by `npm run build` (scripts/bundle-function.mjs): one self-contained ESM file with the wasm
  // inlined, so the CLI neither transpiles nor installs anything. No package.json there on purpose.
  src: `dist/functions/${FUNCTION_NAME}`,
  timeout: TIMEOUT_SECONDS,
  types: SYNCED_TYPES,
  // The Fly app whose started Machines receive each change (FLY_APP_NAME, lowercase, as in `fly apps list`). Edit.
  app: 'my-fly-app',
  // Route templates per type (FLY_SYNC_ROUTES), for the app to purge; placeholders {slug} {id} {type}
  // {locale} {market}. A rename sends old and new routes; a delete all old ones.
  routes: {page: '/{slug}', article: '/blog/{slug}'},
  // Types whose change needs a restart (FLY_RESTART_TYPES: settings read at boot), rolling.
  restartTypes: ['siteSettings'],
  // Non-secret configuration (every variable the core reads is listed in src/config.rs). The helper sets
  // FLY_APP_NAME, FLY_SYNC_ROUTES, FLY_RESTART_TYPES and FLY_SYNC_BUDGET_MS from the options above.
  // Values set here override the shell environment in local tests, so the knobs one turns while testing
  // locally (FLY_API_URL, FLY_APP_URL, FLY_SYNC_DRY_RUN) are documented below but deliberately not set.
  env: {
    // Where the app's receiver listens (docs/protocol.md).
    FLY_SYNC_PATH: '/internal/content-sync',
    // `every`: one POST per started Machine, pinned with fly-force-instance-id. `one`: once through the app
    // URL, for apps whose Machines share one store.
    FLY_SYNC_FAN_OUT: 'every',
    // Also restart a Machine whose receiver answers `restart: "required"`.
    FLY_RESTART_ON_REQUEST: 'true',
    // Machines restarted at once; the next batch starts when these are started with passing checks.
    FLY_MAX_UNAVAILABLE: '1',
    // How long one restarted Machine may take to be back (ms).
    FLY_RESTART_TIMEOUT_MS: '60000',
    // One request's timeout (ms); retries back off within the budget.
    FLY_SYNC_REQUEST_TIMEOUT_MS: '5000',
  },
  // Also read by the core, not set here:
  //   FLY_API_TOKEN         secret: Fly token for the Machines API (`functions env add`, see the top)
  //   FLY_SYNC_SECRET       secret: signs each push (≥16 chars); the Fly app verifies it (`functions env add`).
  //                         Used exactly as given: surrounding whitespace is a configuration error
  //   SANITY_WEBHOOK_SECRET secret: only for the GROQ-webhook entry (createWebhookHandler), not this Function.
  //                         That webhook's projection must carry `{..., _id, _type, _rev, _updatedAt,
  //                         "op": delta::operation()}`: its body is signed, its headers are not
  //   FLY_API_URL           Machines API base, default https://api.machines.dev (local tests: a loopback stand-in);
  //                         a trailing /v1, as Fly's docs write it, is dropped
  //   FLY_APP_URL           app base URL, default https://<FLY_APP_NAME>.fly.dev (local tests: a loopback stand-in)
  //   FLY_SYNC_DRY_RUN      `true`: list and plan, send nothing that changes anything
  //   FLY_SYNC_TYPES        types this target accepts, comma-separated; empty = all the filter lets through
  //   FLY_SYNC_INCLUDE_DRAFTS, FLY_SYNC_INCLUDE_VERSIONS   accept drafts./versions. ids (default false)
  //   FLY_SYNC_MAX_AGE_SECONDS  accepted age of a webhook signature (webhook entry only; default 300)
  //   FLY_SYNC_CONFIG       JSON with several targets (apps/workers, regions, per-target restart rules), instead
  //                         of FLY_APP_NAME and the per-app variables above: remove those from `env` when you
  //                         use it (setting both is an error naming both). src/config.rs has the keys
  //   FLY_SYNC_BUDGET_MS    the core's deadline for the run (set by the helper: the timeout minus 20 s)
  //   FLY_SYNC_RESUME_FUNCTION  the Function a run hands an unfinished roll to (set by the helper:
  //                         `<name>-resume`, the resource flySyncResumeFunction declares; `none`: don't)
  //   FLY_SYNC_DEPENDENTS_DEPTH, FLY_SYNC_DEPENDENTS_CAP, FLY_SYNC_DEPENDENT_TYPES   the documents referencing a
  //                         change, refreshed with it (set by the helper's `dependents` option: levels 0–3, default
  //                         1; at most 50; any type). The lookup reads as the Function's robot token (`robotToken`)
  //   SANITY_PROJECT_ID, SANITY_DATASET   where the dependents query goes: a Function takes both from its context,
  //                         the webhook entry needs them set
  //   SANITY_API_READ_TOKEN secret, webhook entry only: the dependents query's token (a Function uses its robot token)
  //   SANITY_API_HOST       the Sanity API host, default https://<project>.api.sanity.io (local tests: a loopback
  //                         Content Lake)
}

export default defineBlueprint({
  resources: [
    flySyncFunction(FLY_SYNC),
    // Runs of fly-sync that leave a rolling restart unfinished (their time ran out) hand it to this one, so the
    // roll goes on without waiting for the next edit (README: "How a roll survives a timeout").
    flySyncResumeFunction(FLY_SYNC),
    // Sanity's sync tags (what its Live Content API invalidated) pushed to every Machine, for apps that render with
    // next-sanity's sanityFetch + <SanityLive>: `done` is called once every Machine answered (README: "Sync tags").
    flySyncTagFunction(FLY_SYNC),
  ],
})
