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
import type { Chunk, Column, Dataset, FieldInfo, Partition } from './types.js';

export type BatchArray = Float32Array | Int32Array;

export interface Batch {
  /** Rows in this batch (batchSize except maybe the last; 0 for a padding batch of an empty shard). */
  size: number;
  columns: Record<string, BatchArray>;
  /** Values per row of each output column. */
  widths: Record<string, number>;
}

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

type Src = Exclude<Column['values'], BigInt64Array>;
type Kind = 'f32' | 'i32';

interface OutSpec {
  name: string;
  kind: Kind;
  width: number;
  /** Source columns and their offsets within the output row. */
  parts: { col: string; width: number; offset: number; field: FieldInfo }[];
}

/** A chunk whose columns are checked and ready to copy from, in output order. */
interface Prepared {
  rows: number;
  /** [output][part] -> values (rows * part width). */
  srcs: Src[][];
}

const INT_KINDS = new Set(['int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'dict']);

function kindOf(f: FieldInfo): Kind {
  return INT_KINDS.has(f.kind) ? 'i32' : 'f32';
}

function planOutputs(schema: readonly FieldInfo[], source: string, opts: BatchOptions): OutSpec[] {
  const field = (name: string): FieldInfo => {
    const f = schema.find((x) => x.name === name);
    if (!f) throw Errors.data(source, `missing column '${name}' (have: ${schema.map((x) => x.name).join(', ')})`, { column: name });
    if (f.kind === 'unsupported') {
      throw Errors.data(source, `column '${name}' has type ${f.sourceType}, which cannot be batched (numeric or FixedSizeList<numeric> expected)`, {
        column: name,
      });
    }
    if (f.width === 0) {
      const w = opts.listWidth?.[name];
      if (!(Number.isInteger(w) && w! >= 1)) {
        throw Errors.data(source, `column '${name}' is a variable-length ${f.sourceType}; pass listWidth: { '${name}': N } with its row length`, {
          column: name,
        });
      }
      return { ...f, width: w! };
    }
    return f;
  };
  const outs: OutSpec[] = [];
  if (opts.features && opts.features.length > 0) {
    let off = 0;
    const parts = opts.features.map((c) => {
      const f = field(c);
      const p = { col: c, width: f.width, offset: off, field: f };
      off += f.width;
      return p;
    });
    outs.push({ name: 'features', kind: 'f32', width: off, parts });
  }
  if (opts.label !== undefined) {
    const f = field(opts.label);
    outs.push({ name: 'label', kind: kindOf(f), width: f.width, parts: [{ col: opts.label, width: f.width, offset: 0, field: f }] });
  }
  for (const c of opts.columns ?? []) {
    if (outs.some((o) => o.name === c)) throw Errors.invalidArg('columns', `names '${c}' twice (features and label are output names too)`);
    const f = field(c);
    outs.push({ name: c, kind: kindOf(f), width: f.width, parts: [{ col: c, width: f.width, offset: 0, field: f }] });
  }
  if (outs.length === 0) throw Errors.invalidArg('batches options', 'select at least one of features, label or columns');
  return outs;
}

function isNull(c: Column, row: number): boolean {
  const i = (c.validityOffset ?? 0) + row;
  return ((c.validity![i >> 3]! >> (i & 7)) & 1) === 0;
}

/** Check one chunk column and turn it into something `TypedArray.set` can copy from. */
function prepareColumn(chunk: Chunk, part: OutSpec['parts'][number], out: OutSpec, fill: Record<string, number> | undefined): Src {
  const c = chunk.columns[part.col];
  if (!c) throw Errors.data(chunk.source, `missing column '${part.col}'`, { column: part.col });
  // (An empty chunk of a list column has no row to tell its width.)
  if (c.width !== part.width && chunk.rows > 0) {
    throw Errors.data(chunk.source, `column '${part.col}' has ${c.width} values per row here but ${part.width} in the schema`, { column: part.col });
  }
  let v = c.values;
  const n = chunk.rows * c.width;
  const toI32 = out.kind === 'i32';
  if (v instanceof BigInt64Array || (toI32 && v instanceof Uint32Array) || (toI32 && (v instanceof Float64Array || v instanceof Float32Array))) {
    // Needs a checked conversion: int64 -> number, uint32 -> int32 range.
    const w = toI32 ? new Int32Array(n) : new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const x = Number(v[i]!);
      if (toI32 && (x > 2147483647 || x < -2147483648 || !Number.isInteger(x))) {
        if (c.nullCount > 0 && isNull(c, Math.floor(i / c.width))) continue;
        throw Errors.data(chunk.source, `column '${part.col}' value ${String(v[i])} at row ${Math.floor(i / c.width)} does not fit int32`, {
          column: part.col,
        });
      }
      w[i] = x;
    }
    v = w;
  }
  if (c.nullCount > 0) {
    const f = fill?.[part.col];
    if (f === undefined) {
      let first = 0;
      while (first < chunk.rows && !isNull(c, first)) first++;
      const at = c.firstNullAt ?? `row ${first} of this chunk`;
      throw Errors.data(chunk.source, `column '${part.col}' has ${c.nullCount} null values where none are allowed, the first at ${at} (pass fill: { '${part.col}': value } to replace them)`, {
        column: part.col,
        nulls: c.nullCount,
        firstNullAt: at,
      });
    }
    const copy = v === c.values ? (v as Src).slice() : (v as Src);
    for (let r = 0; r < chunk.rows; r++) if (isNull(c, r)) copy.fill(f as never, r * c.width, (r + 1) * c.width);
    v = copy;
  }
  return v as Src;
}

function prepare(chunk: Chunk, outs: OutSpec[], fill: Record<string, number> | undefined): Prepared {
  return { rows: chunk.rows, srcs: outs.map((o) => o.parts.map((p) => prepareColumn(chunk, p, o, fill))) };
}

function alloc(o: OutSpec, rows: number): BatchArray {
  return o.kind === 'f32' ? new Float32Array(rows * o.width) : new Int32Array(rows * o.width);
}

/** Copy rows [from, from+count) of `p` to rows [at, at+count) of the outputs. */
function copyRange(outs: OutSpec[], arrays: BatchArray[], p: Prepared, from: number, count: number, at: number): void {
  for (let o = 0; o < outs.length; o++) {
    const spec = outs[o]!;
    const dst = arrays[o]!;
    const W = spec.width;
    for (let k = 0; k < spec.parts.length; k++) {
      const part = spec.parts[k]!;
      const src = p.srcs[o]![k]!;
      const w = part.width;
      if (w === W) {
        dst.set(src.subarray(from * w, (from + count) * w) as ArrayLike<number>, at * W);
      } else if (w === 1) {
        let d = at * W + part.offset;
        const end = from + count;
        for (let r = from; r < end; r++, d += W) dst[d] = src[r]!;
      } else {
        for (let r = 0; r < count; r++) {
          dst.set(src.subarray((from + r) * w, (from + r + 1) * w) as ArrayLike<number>, (at + r) * W + part.offset);
        }
      }
    }
  }
}

/** Copy the picked rows (chunk slot, row) into rows 0..n-1 of the outputs, one source column at a time. */
function gather(outs: OutSpec[], arrays: BatchArray[], held: (Prepared | undefined)[], pc: Int32Array, pr: Int32Array, n: number): void {
  for (let o = 0; o < outs.length; o++) {
    const spec = outs[o]!;
    const dst = arrays[o]!;
    const W = spec.width;
    for (let k = 0; k < spec.parts.length; k++) {
      const part = spec.parts[k]!;
      const w = part.width;
      if (w === 1) {
        for (let r = 0, d = part.offset; r < n; r++, d += W) dst[d] = held[pc[r]!]!.srcs[o]![k]![pr[r]!]!;
      } else {
        for (let r = 0; r < n; r++) {
          const src = held[pc[r]!]!.srcs[o]![k]!;
          const s = pr[r]! * w;
          const d = r * W + part.offset;
          for (let j = 0; j < w; j++) dst[d + j] = src[s + j]!;
        }
      }
    }
  }
}

/** A view of rows [from, from+count) when every output is a same-typed single column (zero-copy batch). */
function viewRange(outs: OutSpec[], p: Prepared, from: number, count: number): BatchArray[] | undefined {
  const res: BatchArray[] = [];
  for (let o = 0; o < outs.length; o++) {
    const spec = outs[o]!;
    if (spec.parts.length !== 1) return undefined;
    const src = p.srcs[o]![0]!;
    const ok = spec.kind === 'f32' ? src instanceof Float32Array : src instanceof Int32Array;
    if (!ok) return undefined;
    res.push(src.subarray(from * spec.width, (from + count) * spec.width) as BatchArray);
  }
  return res;
}

function makeBatch(outs: OutSpec[], arrays: BatchArray[], size: number): Batch {
  const columns: Record<string, BatchArray> = {};
  const widths: Record<string, number> = {};
  outs.forEach((o, i) => {
    columns[o.name] = arrays[i]!;
    widths[o.name] = o.width;
  });
  return { size, columns, widths };
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
