import { Errors } from '@shoal/core';
import type { RowSparseTensor } from '../api.js';

/**
 * Stack row-sparse gradients of several tables into one (`tables`): table k's row r becomes row
 * `sum(numRows of tables before k) + r`, rows padded with zeros to the widest row size. Ids stay sorted when each
 * input's ids are sorted. Returns new arrays. One collective then moves every table's rows.
 */
export function fuseTables(parts: readonly RowSparseTensor[]): RowSparseTensor {
  const width = Math.max(...parts.map((p) => p.rowSize));
  const n = parts.reduce((a, p) => a + p.rowIds.length, 0);
  const rowIds = new Int32Array(n), rows = new Float32Array(n * width);
  let base = 0, at = 0;
  for (const p of parts) {
    for (let r = 0; r < p.rowIds.length; r++, at++) {
      rowIds[at] = base + p.rowIds[r]!;
      rows.set(p.rows.subarray(r * p.rowSize, (r + 1) * p.rowSize), at * width);
    }
    base += p.numRows;
  }
  return { name: 'tables', numRows: base, rowSize: width, rowIds, rows };
}

/** Undo `fuseTables` on a merged result (any subset of rows, sorted ids), using `like` for names and sizes. */
export function splitTables(fused: RowSparseTensor, like: readonly { name: string; numRows: number; rowSize: number }[]): RowSparseTensor[] {
  const out: RowSparseTensor[] = [];
  let base = 0, at = 0;
  for (const p of like) {
    const start = at;
    while (at < fused.rowIds.length && fused.rowIds[at]! < base + p.numRows) at++;
    const rowIds = new Int32Array(at - start), rows = new Float32Array((at - start) * p.rowSize);
    for (let i = start; i < at; i++) {
      rowIds[i - start] = fused.rowIds[i]! - base;
      rows.set(fused.rows.subarray(i * fused.rowSize, i * fused.rowSize + p.rowSize), (i - start) * p.rowSize);
    }
    out.push({ name: p.name, numRows: p.numRows, rowSize: p.rowSize, rowIds, rows });
    base += p.numRows;
  }
  if (at !== fused.rowIds.length) throw Errors.data('splitTables', `row id ${fused.rowIds[at]} is outside the fused tables (${base} rows)`);
  return out;
}
