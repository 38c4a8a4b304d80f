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
  /**
   * Where commits outlive this process, for a job that restarts whole instead of changing membership in place
   * (`shoal_spark.run(elastic=True)`: a lost task fails the barrier stage and the driver starts a new one): rank
   * 0 writes every commit there, and the first rank 0 of a restarted stage starts from the last one. Such a
   * control never changes membership: `joinPending()` is false and `reset()` throws.
   */
  readonly durable?: CommitStore;
  /** What the previous membership (the failed stage) lost, for the first `onMembershipChange` of this one. */
  readonly lostBefore?: readonly LostWorker[];
}

/**
 * Committed training state held outside the workers (an elastic Spark job's driver, or a folder): opaque bytes,
 * authenticated with the job secret. The last `save` that resolved is what `load` returns; a save cut short
 * leaves the previous commit in place.
 */
export interface CommitStore {
  /** `the driver's store tcp://10.0.0.1:41234`, `folder /shared/commits/job-1`: for messages. */
  readonly where: string;
  save(commit: Uint8Array): Promise<void>;
  /** The last commit, or undefined when none was saved yet. Throws ERR_DATA when it fails its check. */
  load(): Promise<Uint8Array | undefined>;
  close(): Promise<void>;
}

/** Controls attached to engines that are not elastic themselves (a Spark stage's ring, ps or hybrid engine). */
const attached = new WeakMap<GradientSync, ElasticControl>();

/** Make `elasticOf(sync)` return `control` (what `initWorker` does for a stage of an elastic Spark job). */
export function attachElastic(sync: GradientSync, control: ElasticControl): void {
  attached.set(sync, control);
}

/** The elastic control of `sync` if it has one (`shoal run --elastic`, an elastic Spark stage), else undefined. */
export function elasticOf(sync: GradientSync): ElasticControl | undefined {
  const e = (sync as GradientSync & { elastic?: ElasticControl }).elastic ?? attached.get(sync);
  return e !== undefined && typeof e.reset === 'function' ? e : undefined;
}
