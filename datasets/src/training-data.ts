/**
 * One rank's training data for a job, ready for a training loop: the selected columns of its shard (or of the Spark
 * partition it was fed), the steps per epoch every rank agreed on, list column widths found in the data, and the
 * rows flagged as validation data held apart. `@shoal/run`'s `worker.data()` builds it; `Trainer.fit` takes it.
 */
import { Errors } from '@shoal/core';
import { batches, type Batch, type BatchArray } from './batches.js';
import { agreeSteps, localSteps, type Shard, type StepsPolicy } from './shard.js';
import type { Chunk, Column, Dataset, FieldInfo, NumericArray, Partition, ReadOptions } from './types.js';

/** Name of the column `shoal_spark.fit` adds when it is given a `validation_df` (1 = validation row, 0 = training). */
export const VALIDATION_COLUMN = 'shoal_validation';

export interface TrainingDataOptions {
  /** Columns concatenated, in order, into each row's features (scalar, fixed-size list, or list columns). */
  features: readonly string[];
  /** The label column (scalar or list). */
  label: string;
  /** Rows per batch on this rank (default 32). */
  batchSize?: number;
  /**
   * How ranks with different row counts agree on the steps per epoch (default 'min': everyone stops at the
   * smallest shard's count, so no rank repeats rows; 'wrap': the largest count, shorter shards wrap around).
   */
  steps?: StepsPolicy;
  /** Drop each epoch's last short batch (default true: every step has `batchSize` rows on every rank). */
  dropRemainder?: boolean;
  /** Seeded shuffling (see `BatchOptions.shuffle`); default: the data's own row order. */
  shuffle?: { seed: number; buffer: number };
  /** Replacement values for nulls, per column. */
  fill?: Record<string, number>;
  /**
   * Rows whose value in this column is non-zero are validation data, the others training data (default
   * `shoal_validation`, what `shoal_spark.fit(validation_df=...)` adds; ignored when the data has no such column).
   * The split holds this rank's rows in memory.
   */
  validationColumn?: string;
}

/** This rank's validation rows, whole (a rank may have none: `rows` 0). */
export interface ValidationRows {
  rows: number;
  features: Float32Array;
  label: BatchArray;
  widths: { features: number; label: number };
}

/** What a training loop needs from one rank's data. Structural: `Trainer.fit` recognises it by `kind`. */
export interface TrainingData {
  readonly kind: 'shoal.training-data';
  readonly features: readonly string[];
  readonly label: string;
  readonly batchSize: number;
  /** Steps every rank runs per epoch (agreed across ranks). */
  readonly stepsPerEpoch: number;
  /** This rank's training rows. */
  readonly rows: number;
  /** Values per row: `features` (the concatenated width) and `label`. */
  readonly widths: { features: number; label: number };
  /** This rank's validation rows when the data had a validation column, else undefined. */
  readonly validation: ValidationRows | undefined;
  /** The `stepsPerEpoch` batches of one epoch (`columns.features`, `columns.label`). */
  batches(epoch: number): AsyncIterable<Batch>;
  /** Release the underlying dataset (decoder threads, retained stream). Idempotent. */
  close(): Promise<void>;
}

/**
 * Every rank's vector of numbers, in rank order (collective: every rank calls it with a vector of the same length).
 * `@shoal/run` implements it with one `allreduceScalars`.
 */
export type ExchangeVectors = (local: readonly number[]) => Promise<number[][]>;

/**
 * Build this rank's `TrainingData` from `src` (its shard, or the whole dataset a Spark partition arrived as).
 * Collective: one `exchange` call on every rank. `owner` is closed by `close()`.
 *
 * Errors: ERR_DATA naming the source for a missing column, a list column whose width differs between ranks, or an
 * agreed step count of 0 (some rank has fewer than `batchSize` training rows under 'min').
 */
export async function trainingData(src: Shard | Dataset, owner: Dataset, opts: TrainingDataOptions, exchange: ExchangeVectors): Promise<TrainingData> {
  const batchSize = opts.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw Errors.invalidArg('data options.batchSize', `must be a positive integer, got ${JSON.stringify(opts.batchSize)}`);
  if (!Array.isArray(opts.features) || opts.features.length === 0 || opts.features.some((f) => typeof f !== 'string')) {
    throw Errors.invalidArg('data options.features', `must be a non-empty list of column names, got ${JSON.stringify(opts.features)}`);
  }
  if (typeof opts.label !== 'string' || opts.label === '') throw Errors.invalidArg('data options.label', `must be a column name, got ${JSON.stringify(opts.label)}`);
  const policy = opts.steps ?? 'min';
  if (policy !== 'min' && policy !== 'wrap') throw Errors.invalidArg('data options.steps', `must be min|wrap, got ${JSON.stringify(policy)}`);
  const dropRemainder = opts.dropRemainder ?? true;
  const used = [...opts.features, opts.label];
  const have = src.schema.fields.map((f) => f.name);
  for (const c of used) {
    if (!have.includes(c)) throw Errors.data(src.source, `missing column '${c}' (have: ${have.join(', ')})`, { column: c });
  }
  const flag = opts.validationColumn ?? VALIDATION_COLUMN;
  let train: Shard | Dataset = src;
  let valSet: Dataset | undefined;
  if (have.includes(flag)) {
    const split = await splitByFlag(src, [...new Set(used)], flag, opts.fill);
    train = split.train;
    valSet = split.validation;
  } else if (src.partitions.some((p) => p.rows === undefined)) {
    // A live stream's row count is known once it is read: read it (the caller opened it with `retain`).
    for (const p of src.partitions) if (p.rows === undefined) for await (const _ of p.read({ columns: [] })) void _;
  }

  // List columns: the width is in the data. A rank with no rows learns it from the others.
  const listCols = [...new Set(used)].filter((c) => fieldOf(src, c).width === 0);
  const localWidths = await Promise.all(listCols.map((c) => firstWidth(train, c)));
  const counts = [localSteps(train, batchSize, dropRemainder), ...localWidths, valSet ? partsRows(valSet) : 0];
  const all = await exchange(counts);
  const steps = agreeSteps(all.map((v) => v[0]!), policy);
  const listWidth: Record<string, number> = {};
  listCols.forEach((c, i) => {
    const seen = all.map((v) => v[1 + i]!);
    const w = Math.max(...seen);
    const other = seen.findIndex((x) => x !== 0 && x !== w);
    if (other >= 0) throw Errors.data(src.source, `list column '${c}' has ${seen[other]} values per row on rank ${other} but ${w} elsewhere`, { column: c });
    if (w === 0) throw Errors.data(src.source, `list column '${c}' has no rows on any rank: its width is unknown`, { column: c });
    listWidth[c] = w;
  });
  if (steps < 1) {
    const small = all.findIndex((v) => v[0] === 0);
    throw Errors.data(src.source, `the ranks agreed on 0 steps per epoch: rank ${small} has fewer than batchSize=${batchSize} training rows (use fewer workers, a smaller batchSize or steps: 'wrap')`);
  }
  const width = (c: string) => listWidth[c] ?? fieldOf(src, c).width;
  const widths = { features: opts.features.reduce((s, c) => s + width(c), 0), label: width(opts.label) };
  const common = {
    features: opts.features,
    label: opts.label,
    ...(listCols.length > 0 ? { listWidth } : {}),
    ...(opts.fill ? { fill: opts.fill } : {}),
  };
  let validation: ValidationRows | undefined;
  if (valSet) {
    const n = partsRows(valSet);
    validation = { rows: n, features: new Float32Array(0), label: new Float32Array(0), widths };
    if (n > 0) {
      for await (const b of batches(valSet, { ...common, batchSize: n, prefetch: 0 })) {
        validation = { rows: n, features: b.columns.features as Float32Array, label: b.columns.label!, widths };
      }
    }
  }
  const rows = partsRows(train);
  let closed = false;
  return {
    kind: 'shoal.training-data',
    features: [...opts.features],
    label: opts.label,
    batchSize,
    stepsPerEpoch: steps,
    rows,
    widths,
    validation,
    batches: (epoch: number) =>
      batches(train, { ...common, batchSize, epoch, steps, dropRemainder, ...(opts.shuffle ? { shuffle: opts.shuffle } : {}) }),
    async close() {
      if (closed) return;
      closed = true;
      await owner.close();
    },
  };
}

/** Is `x` a `TrainingData` (as `worker.data()` returns)? */
export function isTrainingData(x: unknown): x is TrainingData {
  return typeof x === 'object' && x !== null && (x as { kind?: unknown }).kind === 'shoal.training-data';
}

function fieldOf(src: { source: string; schema: { fields: readonly FieldInfo[] } }, name: string): FieldInfo {
  return src.schema.fields.find((f) => f.name === name)!;
}

function partsRows(s: { partitions: readonly Partition[] }): number {
  return s.partitions.reduce((n, p) => n + (p.rows ?? 0), 0);
}

/** Values per row of list column `c` in the first non-empty chunk of `s`, or 0 when `s` has no rows. */
async function firstWidth(s: Shard | Dataset, c: string): Promise<number> {
  for (const p of s.partitions) {
    if (p.rows === 0) continue;
    for await (const ch of p.read({ columns: [c] })) if (ch.rows > 0) return ch.columns[c]!.width;
  }
  return 0;
}

/** Chunks held in memory, replayed on every read. */
class MemoryPartition implements Partition {
  readonly rows: number;
  constructor(
    readonly name: string,
    private readonly chunks: readonly Chunk[],
  ) {
    this.rows = chunks.reduce((n, c) => n + c.rows, 0);
  }
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    for (const c of this.chunks) {
      const columns: Record<string, Column> = {};
      for (const name of ro.columns) {
        const col = c.columns[name];
        if (!col) throw Errors.data(c.source, `missing column '${name}'`, { column: name });
        columns[name] = col;
      }
      yield { source: c.source, rows: c.rows, columns };
    }
  }
}

/**
 * Read `src`'s `columns` and `flag` once and split its rows into training (flag 0) and validation (flag non-zero)
 * data held in memory (copies of the selected columns; row order kept within each set). Nulls are replaced by
 * `fill` or refused, naming the column.
 */
async function splitByFlag(src: Shard | Dataset, columns: string[], flag: string, fill?: Record<string, number>): Promise<{ train: Dataset; validation: Dataset }> {
  const train: Chunk[] = [];
  const val: Chunk[] = [];
  for (const p of src.partitions) {
    for await (const ch of p.read({ columns: [...columns, flag] })) {
      const f = ch.columns[flag]!;
      if (f.width !== 1) throw Errors.data(ch.source, `validation column '${flag}' must be a scalar, has ${f.width} values per row`, { column: flag });
      const isVal = new Uint8Array(ch.rows);
      let nv = 0;
      for (let r = 0; r < ch.rows; r++) if (Number(f.values[r]!) !== 0 && !(f.nullCount > 0 && isNull(f, r))) (isVal[r] = 1), nv++;
      train.push(pick(ch, columns, isVal, 0, ch.rows - nv, fill));
      val.push(pick(ch, columns, isVal, 1, nv, fill));
    }
  }
  const fields = src.schema.fields.filter((f) => columns.includes(f.name));
  const mk = (name: string, chunks: Chunk[]): Dataset => ({
    source: src.source,
    schema: { fields },
    partitions: [new MemoryPartition(`${src.source}#${name}`, chunks.filter((c) => c.rows > 0))],
    close: async () => undefined,
  });
  return { train: mk('train', train), validation: mk('validation', val) };
}

function isNull(c: Column, row: number): boolean {
  const i = (c.validityOffset ?? 0) + row;
  return ((c.validity![i >> 3]! >> (i & 7)) & 1) === 0;
}

/** The rows of `ch` whose `which` flag equals `want` (n of them), as a chunk of copied columns without nulls. */
function pick(ch: Chunk, columns: string[], which: Uint8Array, want: number, n: number, fill?: Record<string, number>): Chunk {
  const out: Record<string, Column> = {};
  for (const name of columns) {
    const c = ch.columns[name]!;
    const w = c.width;
    const Ctor = c.values.constructor as new (n: number) => NumericArray;
    const dst = new Ctor(n * w);
    let d = 0;
    for (let r = 0; r < ch.rows; r++) {
      if (which[r] !== want) continue;
      if (c.nullCount > 0 && isNull(c, r)) {
        const v = fill?.[name];
        if (v === undefined) throw Errors.data(ch.source, `column '${name}' has a null value at row ${r} of this chunk (pass fill: { '${name}': value } to replace nulls)`, { column: name });
        if (dst instanceof BigInt64Array) dst.fill(BigInt(v), d * w, (d + 1) * w);
        else (dst as Float64Array).fill(v, d * w, (d + 1) * w);
      } else {
        (dst as unknown as { set(a: ArrayLike<number | bigint>, o: number): void }).set(c.values.subarray(r * w, (r + 1) * w) as ArrayLike<number>, d * w);
      }
      d++;
    }
    out[name] = { values: dst, width: w, nullCount: 0 };
  }
  return { source: ch.source, rows: n, columns: out };
}
