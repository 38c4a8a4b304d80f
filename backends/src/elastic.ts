import type { GradientSync } from './api.js';

/** A worker lost from an elastic job: its rank in the generation it left, its stable id and how it ended. */
export interface LostWorker {
  readonly rank: number;
  readonly workerId: number;
  /** `killed by SIGKILL`, `exit code 3`. */
  readonly reason: string;
}

/** What `ElasticControl.reset` returns and a Trainer's `onMembershipChange` hook receives. */
export interface MembershipChange {
  /** The generation now in force (0 is the job's first membership). */
  readonly generation: number;
  /** Number of workers in it. */
  readonly workers: number;
  /** This worker's rank in it. */
  readonly rank: number;
  /** Workers lost since the previous generation this worker was in. */
  readonly lost: readonly LostWorker[];
  /** Stable ids of the workers that joined since then. */
  readonly joined: readonly number[];
}

/**
 * The membership side of an elastic engine (`shoal run --elastic`): a GradientSync whose members may change.
 * When the launcher publishes a new generation after losing a worker, the pending or next collective raises
 * ERR_MEMBERSHIP (naming the lost rank) instead of hanging; the caller rolls its state back to the last commit,
 * calls `reset()` to rebuild the engine on the new membership (rank and size change), and broadcasts the state
 * from the new rank 0. A generation that only adds workers does not interrupt anything: `joinPending()` says so,
 * and the caller resets at its next commit, where nothing is lost.
 */
export interface ElasticControl {
  readonly generation: number;
  /**
   * True on every rank when some rank saw a newer generation that adds workers (collective: one scalar
   * allreduce). Call at a commit point; on true, call `reset()` (no rollback needed).
   */
  joinPending(): Promise<boolean>;
  /** Close the engine of the current generation and connect the newest one this worker belongs to. */
  reset(): Promise<MembershipChange>;
}

/** The elastic control of `sync` if it has one (`shoal run --elastic`), else undefined. */
export function elasticOf(sync: GradientSync): ElasticControl | undefined {
  const e = (sync as GradientSync & { elastic?: ElasticControl }).elastic;
  return e !== undefined && typeof e.reset === 'function' ? e : undefined;
}
