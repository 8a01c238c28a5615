// The local Fly: a Machines API emulator and a fleet of Machines behind a proxy. See README.md beside this file.
export {startMachinesApi, DEFAULT_TOKEN, DEFAULT_TIMINGS, DEFAULT_RATE_LIMITS, ACTIONS, TRANSIENT_STATES, bareToken, rfc3339} from './machines-api.mjs'
export {startFleet, DEFAULT_REGIONS, DEFAULT_LATENCY_MS} from './fleet.mjs'
export {realClock, createManualClock} from './clock.mjs'
export {SPEC_PATCHES, SPEC_SHA256, loadRawSpec, loadPatchedSpec, createBackend} from './spec.mjs'
export {startProcessMachine} from './process.mjs'
