/**
 * The training pipeline: partitions -> chunks -> (seeded shuffle buffer) -> fixed-size batches of Float32Array /
 * Int32Array columns, ready for tf.tensor / ort.Tensor, produced ahead of the consumer (prefetch).
 *
 * Output columns:
 *  - `features` (if `opts.features` is given): Float32Array of `size * width` values, row-major; the row is the
 *    listed columns side by side (a FixedSizeList<N> column contributes N values, a scalar column 1);
 *  - `label` (if `opts.label`): the label column in its natural type (see below);
 *  - every name in `opts.columns`: that column in its natural type.
 * Natural type: integer and dictionary columns -> Int32Array (int64/uint32 values outside int32 range raise),
 * float columns -> Float32Array.
 *
 * Ownership: without shuffling, a batch column that comes from a single source column of the same type and lies
 * inside one chunk is a view on the source's buffer (zero-copy); other batches are fresh arrays. Treat batch
 * arrays as read-only; copy before modifying.
 *
 * Nulls in a selected column raise ERR_DATA naming the chunk's source and the column, before any row of that
 * chunk is used, unless `fill[column]` gives a replacement value.
 */
import { Errors, mixSeed, Rng } from '@shoal/core';
import type { Shard } from './shard.js';
import type { Chunk, Dataset, Partition } from './types.js';
import { alloc, copyRange, gather, makeBatch, planOutputs, prepare, viewRange, type OutSpec, type Prepared, type Batch, type BatchArray } from './batch-columns.js';

export type { Batch, BatchArray } from './batch-columns.js';

export interface BatchOptions {
  batchSize: number;
  /** Columns concatenated, in this order, into the Float32Array `features`. */
  features?: readonly string[];
  /** Column emitted as `label`. */
  label?: string;
  /** Further columns emitted under their own names. */
  columns?: readonly string[];
  /**
   * Seeded shuffling: the partition order is permuted and rows pass through a `buffer`-row shuffle buffer. The
   * same seed, epoch and shard give the same batches. Omit for sequential order.
   */
  shuffle?: { seed: number; buffer: number };
  /** Epoch number, mixed into the shuffle seed (default 0). */
  epoch?: number;
  /** Drop the last batch if it is short (default false). */
  dropRemainder?: boolean;
  /**
   * Exactly this many batches (the count agreed with `agreeSteps`): stop early if the shard has more; wrap around
   * to its start if it has fewer; yield empty batches if the shard has no rows at all.
   */
  steps?: number;
  /** Batches produced ahead of the consumer (default 2; 0 disables). */
  prefetch?: number;
  /** Partitions read concurrently, so worker-thread decoding overlaps (default 2). */
  readAhead?: number;
  /**
   * Row width of variable-length list columns (Arrow List, as Spark writes `array<float>`), by column: every row
   * of the column must have exactly this many values (checked per chunk).
   */
  listWidth?: Record<string, number>;
  /** Replacement values for nulls, per column. */
  fill?: Record<string, number>;
  /** Stop the epoch: the iterator throws ERR_ABORTED at the next batch (reads in flight are abandoned). */
  signal?: AbortSignal;
}

/** Chunks of `parts` in order, keeping up to `window` partitions' reads in flight. */
async function* readAhead(parts: readonly Partition[], columns: string[], window: number, signal?: AbortSignal): AsyncGenerator<Chunk> {
  type Open = { it: AsyncIterator<Chunk>; first: Promise<IteratorResult<Chunk>> };
  const open: Open[] = [];
  let next = 0;
  const fill = () => {
    while (open.length < Math.max(1, window) && next < parts.length) {
      const it = parts[next++]!.read(signal ? { columns, signal } : { columns })[Symbol.asyncIterator]();
      const first = it.next();
      first.catch(() => undefined); // surfaced when this partition's turn comes
      open.push({ it, first });
    }
  };
  try {
    fill();
    while (open.length > 0) {
      const cur = open[0]!;
      let r = await cur.first;
      while (!r.done) {
        if (signal?.aborted) throw Errors.aborted('reading partitions', signal.reason);
        yield r.value;
        r = await cur.it.next();
      }
      open.shift();
      fill();
    }
  } finally {
    for (const o of open) void Promise.resolve(o.it.return?.()).catch(() => undefined);
  }
}

/** One pass over `parts`: batches in order (or shuffled). `limit` caps the batch count. */
async function* onePass(
  parts: readonly Partition[],
  outs: OutSpec[],
  columns: string[],
  opts: BatchOptions,
  cycle: number,
  limit: number,
): AsyncGenerator<Batch> {
  if (limit <= 0) return;
  const bs = opts.batchSize;
  const drop = opts.dropRemainder ?? false;
  let produced = 0;
  const shuffle = opts.shuffle;
  const rng = shuffle ? new Rng(mixSeed(shuffle.seed, opts.epoch ?? 0, cycle)) : undefined;
  let order = parts;
  if (rng) {
    const o = [...parts];
    for (let i = o.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [o[i], o[j]] = [o[j]!, o[i]!];
    }
    order = o;
  }
  const chunks = readAhead(order, columns, opts.readAhead ?? 2, opts.signal);
  try {
    if (!rng) {
      // Sequential: fill batches from consecutive chunk ranges; whole batches inside one chunk are views.
      let arrays: BatchArray[] | undefined;
      let filled = 0;
      for await (const chunk of chunks) {
        const p = prepare(chunk, outs, opts.fill);
        let pos = 0;
        while (pos < p.rows) {
          if (filled === 0 && p.rows - pos >= bs) {
            const view = viewRange(outs, p, pos, bs);
            if (view) {
              yield makeBatch(outs, view, bs);
              pos += bs;
              if (++produced >= limit) return;
              continue;
            }
          }
          if (!arrays) arrays = outs.map((o) => alloc(o, bs));
          const n = Math.min(bs - filled, p.rows - pos);
          copyRange(outs, arrays, p, pos, n, filled);
          filled += n;
          pos += n;
          if (filled === bs) {
            yield makeBatch(outs, arrays, bs);
            arrays = undefined;
            filled = 0;
            if (++produced >= limit) return;
          }
        }
      }
      if (filled > 0 && !drop) yield makeBatch(outs, arrays!.map((a, i) => a.subarray(0, filled * outs[i]!.width) as BatchArray), filled);
      return;
    }
    // Shuffle buffer: up to `cap` row references (chunk slot, row). Each output row is a uniformly chosen buffered
    // row, whose slot then takes the next incoming row. Picks are recorded and a full batch is copied column by
    // column (`gather`), so chunks stay alive until the batch that uses their last row is built.
    const cap = Math.max(1, Math.floor(shuffle!.buffer));
    const refChunk = new Int32Array(cap);
    const refRow = new Int32Array(cap);
    const pickChunk = new Int32Array(bs);
    const pickRow = new Int32Array(bs);
    const held: (Prepared | undefined)[] = [];
    const live: number[] = [];
    let count = 0;
    let picked = 0;
    const flush = (): Batch => {
      const arrays = outs.map((o) => alloc(o, picked));
      gather(outs, arrays, held, pickChunk, pickRow, picked);
      for (let k = 0; k < picked; k++) {
        const c = pickChunk[k]!;
        if (--live[c]! === 0) held[c] = undefined;
      }
      const b = makeBatch(outs, arrays, picked);
      picked = 0;
      return b;
    };
    for await (const chunk of chunks) {
      const p = prepare(chunk, outs, opts.fill);
      if (p.rows === 0) continue;
      const ci = held.length;
      held.push(p);
      live.push(p.rows);
      let r = 0;
      while (count < cap && r < p.rows) {
        refChunk[count] = ci;
        refRow[count] = r++;
        count++;
      }
      for (; r < p.rows; r++) {
        const j = rng.int(count);
        pickChunk[picked] = refChunk[j]!;
        pickRow[picked] = refRow[j]!;
        refChunk[j] = ci;
        refRow[j] = r;
        if (++picked === bs) {
          yield flush();
          if (++produced >= limit) return;
        }
      }
    }
    while (count > 0) {
      const j = rng.int(count);
      pickChunk[picked] = refChunk[j]!;
      pickRow[picked] = refRow[j]!;
      count--;
      refChunk[j] = refChunk[count]!;
      refRow[j] = refRow[count]!;
      if (++picked === bs) {
        yield flush();
        if (++produced >= limit) return;
      }
    }
    if (picked > 0 && !drop) yield flush();
  } finally {
    await chunks.return(undefined);
  }
}

async function* abortable<T>(src: AsyncGenerator<T>, signal: AbortSignal): AsyncGenerator<T> {
  try {
    for (;;) {
      if (signal.aborted) throw Errors.aborted('reading batches', signal.reason);
      const r = await src.next();
      if (r.done) return;
      if (signal.aborted) throw Errors.aborted('reading batches', signal.reason);
      yield r.value;
    }
  } finally {
    await src.return(undefined);
  }
}

/** Run `src` up to `n` items ahead of the consumer. */
async function* prefetch<T>(src: AsyncGenerator<T>, n: number): AsyncGenerator<T> {
  if (n <= 0) {
    yield* src;
    return;
  }
  const q: Promise<IteratorResult<T>>[] = [];
  try {
    for (;;) {
      while (q.length < n + 1) {
        const p = src.next();
        p.catch(() => undefined);
        q.push(p);
      }
      const r = await q.shift()!;
      if (r.done) return;
      yield r.value;
    }
  } finally {
    await src.return(undefined);
  }
}

async function* epochBatches(parts: readonly Partition[], outs: OutSpec[], columns: string[], opts: BatchOptions): AsyncGenerator<Batch> {
  const steps = opts.steps;
  if (steps === undefined) {
    yield* onePass(parts, outs, columns, opts, 0, Infinity);
    return;
  }
  let done = 0;
  let cycle = 0;
  while (done < steps) {
    let got = 0;
    for await (const b of onePass(parts, outs, columns, opts, cycle, steps - done)) {
      got++;
      yield b;
    }
    done += got;
    cycle++;
    if (got === 0 && done < steps) {
      // No rows at all (or fewer than one batch with dropRemainder): pad with empty batches so this rank still
      // takes part in every step.
      const empty = makeBatch(outs, outs.map((o) => alloc(o, 0)), 0);
      for (; done < steps; done++) yield empty;
    }
  }
}

/**
 * The batches of one epoch over a shard (or a whole dataset), as an async iterable. Preconditions: batchSize >= 1;
 * the named columns exist in the schema with batchable types (checked up front: ERR_DATA naming the source).
 * Reading errors (malformed file, truncated stream, nulls) surface from the iterator as ERR_DATA.
 */
export function batches(src: Shard | Dataset, opts: BatchOptions): AsyncIterable<Batch> {
  if (!Number.isInteger(opts.batchSize) || opts.batchSize < 1) {
    throw Errors.invalidArg('batchSize', `must be a positive integer (got ${opts.batchSize})`);
  }
  if (opts.steps !== undefined && (!Number.isInteger(opts.steps) || opts.steps < 0)) {
    throw Errors.invalidArg('steps', `must be a non-negative integer (got ${opts.steps})`);
  }
  if (opts.shuffle && (!Number.isFinite(opts.shuffle.seed) || !(opts.shuffle.buffer >= 1))) {
    throw Errors.invalidArg('shuffle', 'needs a finite seed and buffer >= 1');
  }
  const outs = planOutputs(src.schema.fields, src.source, opts);
  const columns = [...new Set(outs.flatMap((o) => o.parts.map((p) => p.col)))];
  const signal = opts.signal;
  return {
    [Symbol.asyncIterator]: () => {
      const it = prefetch(epochBatches(src.partitions, outs, columns, opts), opts.prefetch ?? 2);
      return signal ? abortable(it, signal) : it;
    },
  };
}
