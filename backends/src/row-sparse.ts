import { Errors } from '@shoal/core';

/**
 * Sort row ids and sum the rows of repeated ids: the merge every row-sparse path needs (a worker before it
 * pushes, the ring's sparse allreduce, the one-worker engine). `rows` holds `rowIds.length * rowSize` values.
 * Ids must be integers in [0, numRows); otherwise a RangeError names `where`. Returns fresh arrays of the same
 * float type; the inputs are not modified.
 */
export function mergeRows<T extends Float32Array | Float64Array>(
  rowIds: Int32Array,
  rows: T,
  rowSize: number,
  numRows: number,
  where: string,
): { ids: Int32Array; rows: T } {
  // Fast path (the common case: a sorted unique row set): strictly increasing in-range ids need only copies.
  let sorted = true;
  for (let i = 0; i < rowIds.length; i++) {
    const r = rowIds[i]!;
    if (!(r >= 0 && r < numRows && (i === 0 || r > rowIds[i - 1]!))) {
      sorted = false;
      break;
    }
  }
  if (sorted) return { ids: rowIds.slice(), rows: rows.slice() as T };
  const order = Array.from(rowIds.keys()).sort((a, b) => rowIds[a]! - rowIds[b]!);
  let unique = 0;
  for (let i = 0; i < order.length; i++) {
    const r = rowIds[order[i]!]!;
    if (!(r >= 0 && r < numRows)) throw Errors.invalidArg(`row id ${r} of ${where}`, `is outside [0, ${numRows})`);
    if (i === 0 || r !== rowIds[order[i - 1]!]) unique++;
  }
  const ids = new Int32Array(unique);
  const out = new (rows.constructor as new (n: number) => T)(unique * rowSize);
  let u = -1;
  for (let i = 0; i < order.length; i++) {
    const src = order[i]!;
    const r = rowIds[src]!;
    const s = src * rowSize;
    if (u < 0 || ids[u] !== r) {
      ids[++u] = r;
      out.set(rows.subarray(s, s + rowSize), u * rowSize);
    } else {
      const d = u * rowSize;
      for (let j = 0; j < rowSize; j++) out[d + j]! += rows[s + j]!;
    }
  }
  return { ids, rows: out };
}
