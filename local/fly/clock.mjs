// Clocks for the local Fly emulator. Real time by default (so the Function running against the emulator sees
// real durations); a manual clock for tests that want lease expiry or wait timeouts without waiting.

/**
 * @typedef {object} Clock
 * @property {() => number} now  milliseconds since the epoch
 * @property {(fn: () => void, ms: number) => unknown} setTimeout
 * @property {(handle: unknown) => void} clearTimeout
 */

/** @type {Clock} */
export const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, Math.max(0, ms)),
  clearTimeout: (handle) => clearTimeout(/** @type {any} */ (handle)),
}

/**
 * A clock that moves only when told. Timers run in order of due time (then of creation) during `advance`.
 *
 * @param {number} [startMs]
 * @returns {Clock & {advance: (ms: number) => void, pending: () => number}}
 */
export function createManualClock(startMs = 1_800_000_000_000) {
  let now = startMs
  let seq = 0
  /** @type {Map<number, {at: number, seq: number, fn: () => void}>} */
  const timers = new Map()
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = ++seq
      timers.set(id, {at: now + Math.max(0, ms), seq: id, fn})
      return id
    },
    clearTimeout(handle) {
      timers.delete(/** @type {number} */ (handle))
    },
    /** Move time forward by `ms`, running every timer that falls due on the way (also ones they create). */
    advance(ms) {
      const target = now + Math.max(0, ms)
      for (;;) {
        /** @type {[number, {at: number, seq: number, fn: () => void}] | null} */
        let next = null
        for (const [id, t] of timers) {
          if (t.at <= target && (!next || t.at < next[1].at || (t.at === next[1].at && t.seq < next[1].seq))) next = [id, t]
        }
        if (!next) break
        timers.delete(next[0])
        now = Math.max(now, next[1].at)
        next[1].fn()
      }
      now = target
    },
    /** How many timers are waiting. */
    pending: () => timers.size,
  }
}
