// Column layout of the training batches (batches.ts): which source columns make each output column, chunks
// checked and prepared for copying, and the copies into a batch's typed arrays.
import { Errors } from '@shoal/core';
import type { Chunk, Column, FieldInfo } from './types.js';

export type BatchArray = Float32Array | Int32Array;

export interface Batch {
  /** Rows in this batch (batchSize except maybe the last; 0 for a padding batch of an empty shard). */
  size: number;
  columns: Record<string, BatchArray>;
  /** Values per row of each output column. */
  widths: Record<string, number>;
}

/** The options that choose a batch's columns (see `BatchOptions`). */
export interface ColumnChoice {
  features?: readonly string[];
  label?: string;
  columns?: readonly string[];
  listWidth?: Record<string, number>;
}

type Src = Exclude<Column['values'], BigInt64Array>;
type Kind = 'f32' | 'i32';

export interface OutSpec {
  name: string;
  kind: Kind;
  width: number;
  /** Source columns and their offsets within the output row. */
  parts: { col: string; width: number; offset: number; field: FieldInfo }[];
}

/** A chunk whose columns are checked and ready to copy from, in output order. */
export interface Prepared {
  rows: number;
  /** [output][part] -> values (rows * part width). */
  srcs: Src[][];
}

const INT_KINDS = new Set(['int8', 'int16', 'int32', 'int64', 'uint8', 'uint16', 'uint32', 'dict']);

function kindOf(f: FieldInfo): Kind {
  return INT_KINDS.has(f.kind) ? 'i32' : 'f32';
}

export function planOutputs(schema: readonly FieldInfo[], source: string, opts: ColumnChoice): OutSpec[] {
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

export function prepare(chunk: Chunk, outs: OutSpec[], fill: Record<string, number> | undefined): Prepared {
  return { rows: chunk.rows, srcs: outs.map((o) => o.parts.map((p) => prepareColumn(chunk, p, o, fill))) };
}

export function alloc(o: OutSpec, rows: number): BatchArray {
  return o.kind === 'f32' ? new Float32Array(rows * o.width) : new Int32Array(rows * o.width);
}

/** Copy rows [from, from+count) of `p` to rows [at, at+count) of the outputs. */
export function copyRange(outs: OutSpec[], arrays: BatchArray[], p: Prepared, from: number, count: number, at: number): void {
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
export function gather(outs: OutSpec[], arrays: BatchArray[], held: (Prepared | undefined)[], pc: Int32Array, pr: Int32Array, n: number): void {
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
export function viewRange(outs: OutSpec[], p: Prepared, from: number, count: number): BatchArray[] | undefined {
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

export function makeBatch(outs: OutSpec[], arrays: BatchArray[], size: number): Batch {
  const columns: Record<string, BatchArray> = {};
  const widths: Record<string, number> = {};
  outs.forEach((o, i) => {
    columns[o.name] = arrays[i]!;
    widths[o.name] = o.width;
  });
  return { size, columns, widths };
}
