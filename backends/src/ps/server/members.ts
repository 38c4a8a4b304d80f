import { Errors, ShoalError } from '@shoal/core';

/**
 * The workers a server shard knows: which connection speaks for which rank (bound by `hello(rank)`), and which
 * workers were lost (their last connection went away), so that what needs them fails at once instead of timing out.
 */
export class Members {
  /** Connection id -> worker rank, for connections that said hello with their rank. */
  private readonly callerRank = new Map<string, number>();
  /** Workers whose connection went away: sync rounds, gathers and staleness waits cannot complete. */
  private readonly lost = new Map<number, ShoalError>();

  constructor(
    private readonly numWorkers: number,
    private readonly serverIndex: number,
  ) {}

  checkRank(rank: number): void {
    if (!Number.isInteger(rank) || rank < 0 || rank >= this.numWorkers) throw Errors.invalidArg('rank', `must be in [0, ${this.numWorkers}), got ${rank}`);
  }

  /** Connection `caller` speaks for worker `rank` from now on (a connection speaks for one rank only). */
  bind(caller: string | undefined, rank: number): void {
    this.checkRank(rank);
    if (caller !== undefined) {
      const had = this.callerRank.get(caller);
      if (had !== undefined && had !== rank) throw Errors.state(`a connection of worker ${had} cannot say hello as worker ${rank} to server ${this.serverIndex}`);
      this.callerRank.set(caller, rank);
    }
    this.lost.delete(rank);
  }

  /**
   * Check that the request naming worker `rank` comes from a connection bound to that rank (`caller` undefined:
   * an in-process call, trusted). ERR_STATE otherwise: a connection cannot push, pull or gather as another worker.
   */
  sender(caller: string | undefined, rank: number): void {
    this.checkRank(rank);
    if (caller === undefined) return;
    const bound = this.callerRank.get(caller);
    if (bound === rank) return;
    throw Errors.state(
      bound === undefined
        ? `a connection that said no hello with a rank cannot act as worker ${rank} on server ${this.serverIndex}`
        : `a connection of worker ${bound} cannot act as worker ${rank} on server ${this.serverIndex}`,
    );
  }

  /** Whether a request naming `rank` from `caller` would pass `sender` (no error built). */
  speaksFor(caller: string | undefined, rank: number): boolean {
    return caller === undefined || this.callerRank.get(caller) === rank;
  }

  /**
   * Connection `caller` went away. Returns the lost worker's error when that was the last connection of a worker
   * (recorded: later requests that need the worker fail with it until it says hello again), else undefined.
   */
  drop(caller: string): { rank: number; err: ShoalError } | undefined {
    const rank = this.callerRank.get(caller);
    if (rank === undefined) return undefined;
    this.callerRank.delete(caller);
    for (const r of this.callerRank.values()) if (r === rank) return undefined; // the worker has another live connection
    const err = Errors.peerClosed(`parameter server ${this.serverIndex}`, `worker ${rank} disconnected`);
    this.lost.set(rank, err);
    return { rank, err };
  }

  /** The first lost worker's error, if any worker this server depends on is gone. */
  lostError(): ShoalError | undefined {
    for (const e of this.lost.values()) return e;
    return undefined;
  }
}
