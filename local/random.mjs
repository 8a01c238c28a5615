// A small seeded random number generator, so the local stand-ins draw the same delays from the same seed.

/** mulberry32: numbers in [0, 1) from a 32-bit seed. @param {number} seed */
export function mulberry32(seed) {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}
