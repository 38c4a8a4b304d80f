/**
 * Test helpers (not exported from the package): tables written by apache-arrow itself, with distinct buffers per
 * column and a unique `id` per row so tests can check that every row is seen exactly once.
 */
import { Field, FixedSizeList, Float32, Int32, RecordBatch, Table, makeData } from 'apache-arrow';

export const FEATURES = 16;

/**
 * A record batch with columns id int32 (start .. start+rows-1), user int32, item int32, label float32 and
 * features FixedSizeList<16, float32>, all derived from id (see `expectedRow`).
 */
export function exampleBatch(start: number, rows: number): RecordBatch {
  const id = new Int32Array(rows);
  const user = new Int32Array(rows);
  const item = new Int32Array(rows);
  const label = new Float32Array(rows);
  const feats = new Float32Array(rows * FEATURES);
  for (let r = 0; r < rows; r++) {
    const i = start + r;
    id[r] = i;
    user[r] = i % 1000;
    item[r] = (i * 7) % 5000;
    label[r] = i % 2;
    for (let j = 0; j < FEATURES; j++) feats[r * FEATURES + j] = i + j / 16;
  }
  const fsl = new FixedSizeList(FEATURES, new Field('element', new Float32(), false));
  return new RecordBatch({
    id: makeData({ type: new Int32(), length: rows, data: id }),
    user: makeData({ type: new Int32(), length: rows, data: user }),
    item: makeData({ type: new Int32(), length: rows, data: item }),
    label: makeData({ type: new Float32(), length: rows, data: label }),
    features: makeData({ type: fsl, length: rows, nullCount: 0, child: makeData({ type: new Float32(), length: rows * FEATURES, data: feats }) }),
  });
}

/** A table of consecutive ids split into record batches of the given sizes (0 allowed). */
export function exampleTable(sizes: readonly number[], start = 0): Table {
  const batches: RecordBatch[] = [];
  let at = start;
  for (const n of sizes) {
    batches.push(exampleBatch(at, n));
    at += n;
  }
  return new Table(batches);
}

export function expectedRow(i: number): { user: number; item: number; label: number; feature0: number } {
  return { user: i % 1000, item: (i * 7) % 5000, label: i % 2, feature0: i };
}
