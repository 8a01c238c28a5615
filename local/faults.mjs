// Fault profiles for the simulation (`npm run simulate -- --faults <name>`). Each arms faults on the local Fly
// (Machines API emulator and fleet) at a chosen step; the simulation then checks that every started Machine
// ends fresh or that the Function's report says exactly which did not and why.

/** @typedef {{api: any, fleet: any}} Fly */

const stepOf = (label) => (index, step) => step.label.startsWith(label)

export const FAULT_PROFILES = {
  none: {description: 'no faults (the emulator still enforces Fly rate limits)', arm() {}},
  flaky: {
    description: '429 with and without Retry-After on list, a 503 on list and on a lease, an ambiguous 408 on a restart',
    arm({api, fleet}, machines) {
      return {
        beforeStep(index, step) {
          if (index === 0) {
            api.faults.rateLimit('list', {retryAfter: 1, times: 1})
            api.faults.rateLimit('list', {times: 1})
            api.faults.serverError('list', {times: 1})
          }
          if (stepOf('settings')(index, step)) {
            api.faults.serverError('lease', {machine: machines[0], times: 1})
            api.faults.ambiguousRestart(machines[1], {times: 1})
          }
        },
      }
    },
  },
  'stuck-restart': {
    description: 'a Machine that never reaches `started` after the settings restart',
    arm({api}, machines) {
      return {
        beforeStep(index, step) {
          if (stepOf('settings')(index, step)) api.faults.stuck(machines[0])
        },
      }
    },
  },
  timeouts: {
    description: 'a Machine list that never answers (the request times out), and a restart whose answer never comes although it happened',
    arm({api}, machines) {
      return {
        beforeStep(index, step) {
          if (index === 0) api.faults.inject({action: 'list', hang: true, times: 1, label: 'fault:timeout'})
          if (stepOf('settings')(index, step)) api.faults.inject({action: 'restart', machine: machines[0], perform: true, hang: true, times: 1, label: 'fault:timeout'})
        },
      }
    },
  },
  'lease-held': {
    description: 'someone else (a deploy, say) holds the lease of one Machine when a restart is due',
    arm({api}, machines) {
      return {
        beforeStep(index, step) {
          if (stepOf('settings')(index, step)) api.faults.leaseHeldElsewhere(machines[0], {ttlS: 600})
        },
      }
    },
  },
  unreachable: {
    description: 'one Machine whose connections are reset from the second step on',
    arm({fleet}, machines) {
      return {
        beforeStep(index) {
          if (index === 1) fleet.faults.unreachable(machines.at(-1), {mode: 'reset'})
        },
      }
    },
  },
}

/** Arm profile `name`; returns the step hooks. */
export function applyFaults(name, fly) {
  const profile = FAULT_PROFILES[name]
  if (!profile) throw new Error(`unknown fault profile ${JSON.stringify(name)}; one of ${Object.keys(FAULT_PROFILES).join(', ')}`)
  const started = fly.api.machines(fly.fleet.app).filter((m) => m.state === 'started').map((m) => m.id)
  return profile.arm(fly, started) ?? {}
}
