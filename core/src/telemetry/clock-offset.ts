import { Errors } from '../errors.js';
import { hostClock } from './host-clock.js';

/** How far this host's clock is from a reference host's (NTP's offset and round-trip delay). */
export interface ClockOffset {
  /** Add to a local `Timeline.now()` reading to get the reference clock's reading of the same moment (µs). */
  readonly offsetUs: number;
  /** Round trip of the sample the offset came from (µs): the offset is exact to within half of it. */
  readonly rttUs: number;
  /** What the offset is measured against (`store tcp://host:port`). */
  readonly reference: string;
  /**
   * The local clock's reading (µs) at the middle of that round trip: the moment the offset holds for. Two offsets
   * of one part measured at different moments let the merge take out the clocks' drift between them.
   */
  readonly atUs?: number;
}

export interface ClockOffsetOptions {
  /** Round trips to take (default 8); the one with the shortest round trip gives the offset. */
  samples?: number;
  /** The local clock in µs (default the timeline's: `hostClock()`). */
  localUs?: () => number;
}

/**
 * NTP's estimate of how far this host's clock is from a reference one (the rendezvous store's host, which every
 * rank of a job reaches), so that the ranks' timelines line up across hosts in the merged trace.
 *
 * Each sample is one round trip: local reading t0, the reference's reading r, local reading t1; the reference read
 * its clock somewhere inside [t0, t1], so `r - (t0 + t1) / 2` is the offset to within half the round trip (exact
 * when the two legs take equally long). Of `samples` round trips the shortest is kept: queueing on a loaded host
 * only lengthens a trip, and the shortest trip bounds the error best (NTP's clock filter does the same).
 *
 * `remoteUs` reads the reference clock in µs (`Store.clock`). Sequential: about `samples` round trips. Throws what
 * `remoteUs` throws (a store gone: ERR_PEER_CLOSED).
 */
export async function estimateClockOffset(remoteUs: () => Promise<number>, reference: string, opts: ClockOffsetOptions = {}): Promise<ClockOffset> {
  const samples = opts.samples ?? 8;
  if (!Number.isInteger(samples) || samples < 1) throw Errors.invalidArg('samples', `must be an integer >= 1, got ${samples}`);
  const local = opts.localUs ?? hostClock();
  let best: { offsetUs: number; rttUs: number; atUs: number } | undefined;
  for (let i = 0; i < samples; i++) {
    const t0 = local();
    const r = await remoteUs();
    const t1 = local();
    const rtt = t1 - t0;
    if (best === undefined || rtt < best.rttUs) best = { offsetUs: r - (t0 + t1) / 2, rttUs: rtt, atUs: (t0 + t1) / 2 };
  }
  return { ...best!, reference };
}
