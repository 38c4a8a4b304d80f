/**
 * Partition assignment and the steps-per-epoch agreement.
 *
 * Assignment rule (every rank computes it alone from the same dataset, so all ranks agree without talking):
 *  1. partitions are sorted by name (code-unit order);
 *  2. `balanced` (the default, used when every partition's row count is known): partitions are taken largest first
 *     (ties: name order) and each goes to the rank with the fewest rows so far (ties: lowest rank);
 *     `round-robin` (used when some count is unknown, or when asked): sorted partition i goes to rank i mod size;
 *  3. each rank reads its partitions in name order (the pipeline may shuffle that order per epoch).
 * Every partition goes to exactly one rank; a rank may get none (it then has 0 rows, see `agreeSteps`).
 */
import { Errors } from '@shoal/core';
import type { Dataset, DatasetSchema, Partition } from './types.js';

export type AssignPolicy = 'balanced' | 'round-robin';

/** The partitions one rank reads. */
export interface Shard {
  readonly source: string;
  readonly schema: DatasetSchema;
  readonly partitions: readonly Partition[];
  readonly rank: number;
  readonly size: number;
}

function checkRank(rank: number, size: number): void {
  if (!Number.isInteger(size) || size < 1) throw Errors.invalidArg('size', `must be a positive integer (got ${size})`);
  if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw Errors.invalidArg('rank', `must be an integer in [0, ${size}) (got ${rank})`);
}

/** Rank -> indices into `sorted` (see the module comment for the rule). */
export function assignPartitions(sorted: readonly Partition[], size: number, policy: AssignPolicy = 'balanced'): number[][] {
  const out: number[][] = Array.from({ length: size }, () => []);
  const known = sorted.every((p) => p.rows !== undefined);
  if (policy === 'round-robin' || !known) {
    sorted.forEach((_, i) => out[i % size]!.push(i));
    return out;
  }
  const order = sorted.map((_, i) => i).sort((a, b) => sorted[b]!.rows! - sorted[a]!.rows! || a - b);
  const load = new Array<number>(size).fill(0);
  for (const i of order) {
    let best = 0;
    for (let r = 1; r < size; r++) if (load[r]! < load[best]!) best = r;
    out[best]!.push(i);
    load[best]! += sorted[i]!.rows!;
  }
  for (const l of out) l.sort((a, b) => a - b);
  return out;
}

/**
 * The partitions of `dataset` that `rank` of `size` reads. Precondition: every rank passes a dataset opened on
 * the same data (same partition names and row counts), so the assignments agree.
 */
export function shard(dataset: Dataset, rank: number, size: number, policy: AssignPolicy = 'balanced'): Shard {
  checkRank(rank, size);
  const sorted = [...dataset.partitions].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.name === sorted[i - 1]!.name) throw Errors.data(dataset.source, `two partitions are named '${sorted[i]!.name}'`);
  }
  const mine = assignPartitions(sorted, size, policy)[rank]!.map((i) => sorted[i]!);
  return { source: dataset.source, schema: dataset.schema, partitions: mine, rank, size };
}

/** Total rows of a shard or dataset; throws ERR_STATE if a partition's count is unknown (an unread stream). */
export function shardRows(s: { source: string; partitions: readonly Partition[] }): number {
  let n = 0;
  for (const p of s.partitions) {
    if (p.rows === undefined) {
      throw Errors.state(`${p.name}: row count unknown until the stream is read (pass { rows } or { retain: true } and read it once)`);
    }
    n += p.rows;
  }
  return n;
}

/** Batches this rank would produce in one pass: ceil(rows / batchSize), or floor with dropRemainder. */
export function localSteps(s: { source: string; partitions: readonly Partition[] }, batchSize: number, dropRemainder = false): number {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw Errors.invalidArg('batchSize', `must be a positive integer (got ${batchSize})`);
  const rows = shardRows(s);
  return dropRemainder ? Math.floor(rows / batchSize) : Math.ceil(rows / batchSize);
}

/**
 * How ranks with different local step counts agree on one count per epoch:
 *  - `min`: everyone stops after the smallest count; the extra batches of bigger shards are dropped this epoch
 *    (with shuffling, different rows are dropped each epoch). A rank with no rows makes the count 0.
 *  - `wrap`: everyone runs the largest count; shorter shards wrap around to their start (re-reading their rows)
 *    to fill the missing steps, and a rank with no rows at all yields empty batches (`size` 0) so it still joins
 *    every collective step (it must contribute zero gradients).
 */
export type StepsPolicy = 'min' | 'wrap';

/** The agreed steps per epoch from every rank's `localSteps` (in any order). */
export function agreeSteps(counts: readonly number[], policy: StepsPolicy = 'wrap'): number {
  if (counts.length === 0) throw Errors.invalidArg('counts', 'must hold one count per rank (got none)');
  for (const c of counts) {
    if (!Number.isInteger(c) || c < 0) throw Errors.invalidArg('counts', `must be non-negative integers (got ${c})`);
  }
  return policy === 'min' ? Math.min(...counts) : Math.max(...counts);
}

/**
 * `agreeSteps` over an allgather the caller provides (any collective that returns every rank's number, in rank
 * order), e.g. `(n) => ring.allgather(n)`. Every rank must call it with the same policy.
 */
export async function syncSteps(
  local: number,
  allgather: (n: number) => Promise<readonly number[]>,
  policy: StepsPolicy = 'wrap',
): Promise<number> {
  return agreeSteps(await allgather(local), policy);
}
