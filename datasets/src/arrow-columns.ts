/**
 * Apache Arrow (JS) schemas and record batches -> shoal `FieldInfo`s and `Chunk`s, without copying: a chunk column's
 * `values` is the Arrow data's own typed array (itself a view on the IPC message body it was read from).
 */
import { DataType, type Data, type Field, type RecordBatch, type Schema } from 'apache-arrow';
import { Errors } from '@shoal/core';
import type { Chunk, Column, ColumnKind, FieldInfo, NumericArray } from './types.js';

/** The numeric kind of a scalar Arrow type, or undefined if the type cannot be batched. */
function scalarKind(t: DataType): ColumnKind | undefined {
  if (DataType.isInt(t)) {
    const bits = t.bitWidth;
    if (t.isSigned) return bits === 8 ? 'int8' : bits === 16 ? 'int16' : bits === 32 ? 'int32' : 'int64';
    return bits === 8 ? 'uint8' : bits === 16 ? 'uint16' : bits === 32 ? 'uint32' : undefined;
  }
  if (DataType.isFloat(t)) {
    // Precision: 0 half, 1 single, 2 double. Half floats are not supported (no Float16Array in Node 20).
    return t.precision === 1 ? 'float32' : t.precision === 2 ? 'float64' : undefined;
  }
  return undefined;
}

/** Describe one Arrow field. Unsupported types get kind 'unsupported' (an error only if the column is used). */
export function fieldInfoOf(f: Field): FieldInfo {
  const t = f.type;
  const base = { name: f.name, nullable: f.nullable, sourceType: String(t) };
  if (DataType.isFixedSizeList(t)) {
    const kind = scalarKind(t.children[0]!.type);
    return { ...base, kind: kind ?? 'unsupported', width: t.listSize };
  }
  if (isMlVector(t)) {
    // A Spark ML vector (VectorUDT's struct): its dense `values`, a list whose width the data tells.
    return { ...base, kind: 'float64', width: 0, sourceType: `Spark ML vector ${String(t)}` };
  }
  if (DataType.isList(t)) {
    // Variable-length list (Spark's array<float>): width 0 = fixed per row only if the data says so, checked per
    // chunk; the pipeline is told the width (BatchOptions.listWidth).
    const kind = scalarKind(t.children[0]!.type);
    return { ...base, kind: kind ?? 'unsupported', width: 0 };
  }
  return { ...base, kind: scalarKind(t) ?? 'unsupported', width: 1 };
}

export function fieldsOf(schema: Schema): FieldInfo[] {
  return schema.fields.map(fieldInfoOf);
}

/** Spark ML's VectorUDT as Spark hands it to Arrow or writes it to Parquet: struct<type, size, indices, values>. */
function isMlVector(t: DataType): boolean {
  if (!DataType.isStruct(t)) return false;
  const names = t.children.map((c) => c.name).sort().join(',');
  const values = t.children.find((c) => c.name === 'values');
  return names === 'indices,size,type,values' && values !== undefined && DataType.isList(values.type) && DataType.isFloat(values.type.children[0]!.type);
}

/**
 * ML vectors become a fixed-width column: all-dense chunks are their `values` list (no copy); chunks with sparse
 * rows (`type` 0: `size`, `indices`, `values`, as VectorAssembler writes mostly-zero rows) are densified into a
 * new float64 array. Every row must have the same width (size).
 */
function columnOfMlVector(data: Data, info: FieldInfo, source: string): Column {
  if (data.nullCount > 0) throw Errors.data(source, `column '${info.name}' has ${data.nullCount} null vectors; every row needs a value`, { column: info.name });
  const names = (data.type as DataType & { children: Field[] }).children.map((c) => c.name);
  const child = (n: string) => data.children[names.indexOf(n)]!;
  const kinds = child('type').values as Int8Array;
  const valuesData = child('values');
  const rows = data.length;
  let sparse = false;
  for (let r = 0; r < rows; r++) if (kinds[r] !== 1) sparse = true;
  if (!sparse) return columnOfList(valuesData, info, source);
  const sizes = child('size').values as Int32Array;
  const vOff = valuesData.valueOffsets as Int32Array;
  const vals = valuesData.children[0]!.values as Float64Array | Float32Array;
  const iData = child('indices');
  const iOff = iData.valueOffsets as Int32Array;
  const idx = iData.children[0]!.values as Int32Array;
  const widthOf = (r: number) => (kinds[r] === 1 ? vOff[r + 1]! - vOff[r]! : sizes[r]!);
  const w = rows > 0 ? widthOf(0) : 0;
  const out = new Float64Array(rows * w);
  for (let r = 0; r < rows; r++) {
    if (widthOf(r) !== w) {
      throw Errors.data(source, `column '${info.name}' holds vectors of different sizes (row 0 has ${w}, row ${r} has ${widthOf(r)}); fixed-size rows are required`, { column: info.name });
    }
    const v0 = vOff[r]!;
    if (kinds[r] === 1) {
      for (let j = 0; j < w; j++) out[r * w + j] = vals[v0 + j]!;
    } else {
      const i0 = iOff[r]!;
      const nnz = iOff[r + 1]! - iOff[r]!;
      for (let k = 0; k < nnz; k++) {
        const j = idx[i0 + k]!;
        if (j < 0 || j >= w) throw Errors.data(source, `column '${info.name}' row ${r}: sparse index ${j} outside size ${w}`, { column: info.name });
        out[r * w + j] = vals[v0 + k]!;
      }
    }
  }
  return { values: out, width: w, nullCount: 0 };
}

function columnOfData(data: Data, info: FieldInfo, source: string): Column {
  const rows = data.length;
  if (isMlVector(data.type)) return columnOfMlVector(data, info, source);
  if (DataType.isList(data.type)) return columnOfList(data, info, source);
  let values: NumericArray;
  let nullCount = data.nullCount;
  let validity: Uint8Array | undefined;
  let validityOffset = 0;
  if (nullCount > 0) {
    validity = data.nullBitmap;
    validityOffset = data.offset;
  }
  if (DataType.isFixedSizeList(data.type)) {
    const child = data.children[0]!;
    const childNulls = child.nullCount;
    if (childNulls > 0) {
      // A null element inside a list: no per-row bitmap describes it, so it is refused here.
      throw Errors.data(source, `column '${info.name}' has ${childNulls} null list elements (${info.sourceType})`, {
        column: info.name,
      });
    }
    values = child.values as NumericArray;
  } else {
    values = data.values as NumericArray;
  }
  const n = rows * info.width;
  if (values.length < n) {
    throw Errors.data(source, `column '${info.name}' has ${values.length} values for ${rows} rows of width ${info.width}`, {
      column: info.name,
    });
  }
  if (values.length !== n) values = values.subarray(0, n) as NumericArray;
  return nullCount > 0 ? { values, width: info.width, nullCount, validity: validity!, validityOffset } : { values, width: info.width, nullCount: 0 };
}

/**
 * A List<numeric> column whose rows all have the same length N becomes a width-N column viewing the child values
 * (no copy); rows of different lengths or null rows raise ERR_DATA (they cannot form a fixed-width batch).
 */
function columnOfList(data: Data, info: FieldInfo, source: string): Column {
  const rows = data.length;
  if (data.nullCount > 0) {
    throw Errors.data(source, `column '${info.name}' has ${data.nullCount} null lists (${info.sourceType}); every row needs a value`, { column: info.name });
  }
  const child = data.children[0]!;
  if (child.nullCount > 0) {
    throw Errors.data(source, `column '${info.name}' has ${child.nullCount} null list elements (${info.sourceType})`, { column: info.name });
  }
  const off = data.valueOffsets as Int32Array;
  const base = rows > 0 ? off[0]! : 0;
  const w = rows > 0 ? off[1]! - base : 0;
  for (let r = 1; r <= rows; r++) {
    if (off[r]! - off[r - 1]! !== w) {
      throw Errors.data(source, `column '${info.name}' is a list of varying length (row 0 has ${w} values, row ${r - 1} has ${off[r]! - off[r - 1]!}); fixed-length rows are required`, {
        column: info.name,
      });
    }
  }
  // child.values is already offset to the child's own start; list offsets index into it.
  const values = (child.values as NumericArray).subarray(base, base + rows * w) as NumericArray;
  return { values, width: w, nullCount: 0 };
}

/**
 * The selected columns of `batch` as a chunk (zero-copy views). Throws ERR_DATA naming `source` and the column if
 * a column is missing or of a type that cannot be batched.
 */
export function chunkOfBatch(batch: RecordBatch, columns: readonly string[], source: string): Chunk {
  const out: Record<string, Column> = {};
  for (const name of columns) {
    const idx = batch.schema.fields.findIndex((f) => f.name === name);
    if (idx < 0) {
      throw Errors.data(source, `missing column '${name}' (have: ${batch.schema.fields.map((f) => f.name).join(', ')})`, {
        column: name,
      });
    }
    const info = fieldInfoOf(batch.schema.fields[idx]!);
    if (info.kind === 'unsupported') {
      throw Errors.data(source, `column '${name}' has type ${info.sourceType}, which cannot be batched (numeric or FixedSizeList<numeric> expected)`, {
        column: name,
      });
    }
    // The batch's own struct Data holds one child Data per column (no Vector built).
    const d = batch.data.children[idx];
    if (!d) throw Errors.data(source, `column '${name}' has no data in this record batch`, { column: name });
    if (!info.nullable && d.nullCount > 0) {
      throw Errors.data(source, `column '${name}' is declared non-nullable (${info.sourceType}) but holds ${d.nullCount} nulls`, {
        column: name,
      });
    }
    out[name] = columnOfData(d, info, source);
  }
  return { source, rows: batch.numRows, columns: out };
}

/** Check that two schemas agree on every column's name, type and nullability; throws naming `where`. */
export function assertSameFields(where: string, got: readonly FieldInfo[], want: readonly FieldInfo[], wantFrom: string): void {
  const g = new Map(got.map((f) => [f.name, f]));
  for (const w of want) {
    const f = g.get(w.name);
    if (!f) throw Errors.data(where, `schema mismatch: column '${w.name}' (present in ${wantFrom}) is missing`, { column: w.name });
    if (f.sourceType !== w.sourceType) {
      throw Errors.data(where, `schema mismatch: column '${w.name}' is ${f.sourceType} here but ${w.sourceType} in ${wantFrom}`, {
        column: w.name,
      });
    }
  }
  for (const f of got) {
    if (!want.some((w) => w.name === f.name)) {
      throw Errors.data(where, `schema mismatch: extra column '${f.name}' not present in ${wantFrom}`, { column: f.name });
    }
  }
}
