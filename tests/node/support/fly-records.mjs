// Checks read from the local Fly's own records (local/fly: the emulator's state log, request log and lease log),
// never from what the engine says about itself. Each returns what it found, so a test can assert on it and say
// exactly what broke.

/**
 * How a request's stamps may trail the engine's clock: the emulator stamps a request when its event loop gets
 * to it, and a request the client gave up on ends when the close reaches the server — both in the same process
 * as the Function on loopback, so a few event-loop turns, not a network.
 */
export const LOOPBACK_SLACK_MS = 250

/** Down for users: not `started`, or started without passing checks (with a fleet, checks pass only while it serves). */
export const isDown = (entry) => entry.state !== 'started' || entry.checks === 'critical'

/**
 * The most Machines down at once over `[from, to]`, from the emulator's timelines (keyed by Machine id). Each
 * Machine starts in the state of its last entry before `from`; entries are replayed in the emulator's own order
 * (`seq`), so two Machines changing in the same millisecond are counted as they happened.
 *
 * @param {Record<string, {seq: number, at: number, state: string, checks: string}[]>} timelines
 * @param {{from: number, to?: number, down?: (entry: any) => boolean}} options
 * @returns {{most: number, at: number | null, machines: string[]}}  the peak, when it was first reached, and who was down
 */
export function mostDownAtOnce(timelines, {from, to = Infinity, down = isDown}) {
  const entries = Object.values(timelines).flat().sort((a, b) => a.seq - b.seq)
  if (entries.some((e) => typeof e.seq !== 'number')) throw new Error('timeline entries carry no `seq` (local/fly too old?)')
  const current = new Set()
  for (const e of entries) if (e.at < from) (down(e) ? current.add(e.machine) : current.delete(e.machine))
  let peak = {most: current.size, at: current.size ? from : null, machines: [...current]}
  for (const e of entries) {
    if (e.at < from || e.at > to) continue
    if (down(e)) current.add(e.machine)
    else current.delete(e.machine)
    if (current.size > peak.most) peak = {most: current.size, at: e.at, machines: [...current]}
  }
  return peak
}

/**
 * The runs of a simulation (every report of every step) as time windows on the shared clock:
 * `{label, startedAtMs, endedAtMs, deadlineMs}`, in start order.
 */
export function runWindows(result, budgetMs) {
  const runs = []
  for (const s of result.steps) {
    for (const r of s.reports) {
      if (typeof r.startedAtMs !== 'number') throw new Error(`${s.label}: a report without startedAtMs`)
      runs.push({label: s.label, startedAtMs: r.startedAtMs, endedAtMs: r.startedAtMs + r.durationMs, deadlineMs: r.startedAtMs + budgetMs})
    }
  }
  return runs.sort((a, b) => a.startedAtMs - b.startedAtMs)
}

/**
 * Machines API requests (the emulator's log) that break a run's time budget. Each request belongs to the latest
 * run started before it arrived. Broken: it arrived after the run's deadline or after the run reported done,
 * or it was still open (answered or abandoned later) past the deadline; or it belongs to no run at all.
 * `slackMs` only absorbs the stamping delays described at LOOPBACK_SLACK_MS.
 *
 * @returns {{checked: number, late: {action: string, machine: string | null, at: number, endedAt: number | null, run: string | null, why: string}[]}}
 */
export function requestsPastBudget(apiLog, runs, {slackMs = LOOPBACK_SLACK_MS} = {}) {
  const late = []
  let checked = 0
  for (const r of apiLog) {
    const run = runs.filter((w) => w.startedAtMs <= r.at).at(-1)
    const entry = (why) => late.push({action: r.action, machine: r.machine, at: r.at, endedAt: r.endedAt, run: run?.label ?? null, why})
    if (!run) {
      entry('sent before any run started')
      continue
    }
    checked += 1
    if (r.at > run.deadlineMs + slackMs) entry(`arrived ${r.at - run.deadlineMs} ms after the run's budget ended`)
    else if (r.at > run.endedAtMs + slackMs) entry(`arrived ${r.at - run.endedAtMs} ms after the run reported done`)
    else if (r.endedAt === null) entry('still open when the simulation ended')
    else if (r.endedAt > run.deadlineMs + slackMs) entry(`open until ${r.endedAt - run.deadlineMs} ms after the run's budget ended`)
  }
  return {checked, late}
}

/**
 * Leases the runs left behind, from the emulator's lease log (`api.leases()`, `result.leases` of a simulation):
 * every lease taken through the API (the Function is the emulator's only API client) must have been released by
 * a DELETE — still held, or left to expire by its TTL, is a lease left behind.
 *
 * @returns {{taken: number, leftBehind: {machine: string, end: string, acquiredAt: number, expiresAt: number}[]}}
 */
export function leasesLeftBehind(leases) {
  const ours = leases.filter((l) => l.source === 'api')
  return {
    taken: ours.length,
    leftBehind: ours.filter((l) => l.end !== 'released').map(({machine, end, acquiredAt, expiresAt}) => ({machine, end, acquiredAt, expiresAt})),
  }
}

/**
 * Restarts per Machine as the emulator saw them (a `stopping` entry caused by a restart) in `[from, to]`, and
 * whether each Machine was back `started` with passing checks at `to`.
 *
 * @returns {Record<string, {restarts: number, upAtEnd: boolean}>}
 */
export function restartsSeen(timelines, {from, to}) {
  const out = {}
  for (const [id, timeline] of Object.entries(timelines)) {
    const inWindow = timeline.filter((e) => e.at >= from && e.at <= to)
    const last = timeline.filter((e) => e.at <= to).at(-1)
    out[id] = {
      restarts: inWindow.filter((e) => e.state === 'stopping' && e.cause === 'restart').length,
      upAtEnd: Boolean(last) && !isDown(last),
    }
  }
  return out
}
