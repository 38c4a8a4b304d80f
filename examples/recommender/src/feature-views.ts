import type { RowSparseTensor } from '@shoal/backends';
import type { Features, TokenLists } from './prepare.js';

/** Where a step reads a table's rows (see model.ts): `data` holds them, `at(r)` is row r's offset in it. */
interface RowView { readonly data: Float32Array; at(row: number): number }

/**
 * Optional item / user features (config `itemFeatures`, `userFeatures`) as an embedding table of feature tokens:
 * an entity's effective row is its own row plus the mean of its tokens' rows (on the first `dim` values; an item's
 * output row keeps its bias column). The model computes on effective rows unchanged; since the effective row is
 * the base row plus a token mean, the base row's gradient is the effective row's, and each token gets the
 * effective rows' gradients (first `dim` values) divided by the entity's token count.
 */

/** The unique sorted tokens of `users` and of the items in `itemRows` (e.g. a step's planned rows). */
export function featureRows(f: Features, users: Int32Array, itemRows: readonly Int32Array[]): Int32Array {
  const s = new Set<number>();
  const add = (l: TokenLists, e: number): void => { for (let x = l.offsets[e]!; x < l.offsets[e + 1]!; x++) s.add(l.ids[x]!); };
  for (const u of users) add(f.user, u);
  for (const rows of itemRows) for (const j of rows) add(f.item, j);
  return Int32Array.from(s).sort();
}

/** Entity e's row of `base` (rowSize values) plus the mean of its tokens' rows of `feat` on the first `dim` values, into out[o..). */
function addTokens(base: RowView, feat: RowView, lists: TokenLists, e: number, rowSize: number, dim: number, out: Float32Array, o: number): void {
  const b = base.at(e);
  out.set(base.data.subarray(b, b + rowSize), o);
  const s = lists.offsets[e]!, n = lists.offsets[e + 1]! - s;
  if (n === 0) return;
  const inv = 1 / n;
  for (let x = s; x < s + n; x++) {
    const fo = feat.at(lists.ids[x]!);
    for (let k = 0; k < dim; k++) out[o + k]! += feat.data[fo + k]! * inv;
  }
}

/** The effective rows `rows` (sorted ids) of a table, packed, as a RowView over exactly those rows. */
export function effectiveView(base: RowView, feat: RowView, lists: TokenLists, rows: Int32Array, rowSize: number, dim: number): RowView {
  const data = new Float32Array(rows.length * rowSize);
  const pos = new Map<number, number>();
  rows.forEach((e, i) => { addTokens(base, feat, lists, e, rowSize, dim, data, i * rowSize); pos.set(e, i * rowSize); });
  return { data, at: (r) => pos.get(r)! };
}

/** A whole effective table of `numRows` rows (scoring every item / user). */
export function effectiveTable(base: RowView, feat: RowView, lists: TokenLists, numRows: number, rowSize: number, dim: number): Float32Array {
  const out = new Float32Array(numRows * rowSize);
  for (let e = 0; e < numRows; e++) addTokens(base, feat, lists, e, rowSize, dim, out, e * rowSize);
  return out;
}

/** The token table's row gradient from the effective rows' gradients of users (`grads[0]`) and items (`grads[1..]`). */
export function featureGradient(f: Features, grads: readonly RowSparseTensor[], table: { name: string; numRows: number; rowSize: number }, rows: Int32Array): RowSparseTensor {
  const dim = table.rowSize;
  const slot = new Map<number, number>();
  rows.forEach((t, i) => slot.set(t, i * dim));
  const out = new Float32Array(rows.length * dim);
  grads.forEach((g, k) => {
    const lists = k === 0 ? f.user : f.item;
    for (let r = 0; r < g.rowIds.length; r++) {
      const e = g.rowIds[r]!, s = lists.offsets[e]!, n = lists.offsets[e + 1]! - s;
      for (let x = s; x < s + n; x++) {
        const o = slot.get(lists.ids[x]!)!;
        for (let c = 0; c < dim; c++) out[o + c]! += g.rows[r * g.rowSize + c]! / n;
      }
    }
  });
  return { name: table.name, numRows: table.numRows, rowSize: dim, rowIds: rows, rows: out };
}
