/**
 * The clock of the timeline: this host's monotonic clock (CLOCK_MONOTONIC, `process.hrtime`) in microseconds,
 * which every process and thread of a host reads alike.
 *
 * Not the wall clock: `performance.timeOrigin + performance.now()` pins each process to the wall clock once, at its
 * start, and then follows the monotonic clock, so processes started at different times disagree by however much the
 * wall clock was slewed or stepped in between (on this machine's VM the wall clock ran 0.5 % ahead of the monotonic
 * one: ranks started a second after their parameter servers were ~4 ms apart). Hosts' monotonic clocks start at their
 * boots; the ranks' clock offsets against the store's host (`estimateClockOffset`) line them up in the merged trace.
 */

/**
 * This thread's `performance.now()` origin on the host's monotonic clock, in µs: `performance.now() * 1000 +
 * monotonicOriginUs()` is a host-clock reading. `performance.now()` and `process.hrtime` read the same clock, so one
 * back-to-back pair fixes the origin; of a few pairs the tightest is kept (a preemption in between only widens one).
 */
export function monotonicOriginUs(): number {
  let best = Infinity;
  let origin = 0;
  for (let i = 0; i < 5; i++) {
    const a = performance.now();
    const h = Number(process.hrtime.bigint()) / 1000;
    const b = performance.now();
    if (b - a < best) {
      best = b - a;
      origin = h - ((a + b) / 2) * 1000;
    }
  }
  return origin;
}

/** A reader of the host clock in µs (see the module doc): `performance.now()` plus this thread's origin. */
export function hostClock(): () => number {
  const origin = monotonicOriginUs();
  return () => performance.now() * 1000 + origin;
}
