import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Field, Float64, Int8, Int32, List, RecordBatch, Table, makeData, tableToIPC } from 'apache-arrow';
import { isShoalError } from '@shoal/core';
import { isTrainingData, openArrowStream, trainingData, type ExchangeVectors } from './index.js';

/** Spark's shapes: `v` array<double> (a List, what vector_to_array gives), `x` double, `y` int, optional flag. */
function sparkBatch(start: number, rows: number, width: number, flagEvery = 0): RecordBatch {
  const offsets = new Int32Array(rows + 1);
  const vals = new Float64Array(rows * width);
  const x = new Float64Array(rows);
  const y = new Int32Array(rows);
  const flag = new Int8Array(rows);
  for (let r = 0; r < rows; r++) {
    const i = start + r;
    offsets[r + 1] = (r + 1) * width;
    for (let j = 0; j < width; j++) vals[r * width + j] = i * 10 + j;
    x[r] = -i;
    y[r] = i % 3;
    flag[r] = flagEvery > 0 && i % flagEvery === 0 ? 1 : 0;
  }
  const list = new List(new Field('element', new Float64(), false));
  const cols: Record<string, ReturnType<typeof makeData>> = {
    v: makeData({ type: list, length: rows, nullCount: 0, valueOffsets: offsets, child: makeData({ type: new Float64(), length: rows * width, data: vals }) }),
    x: makeData({ type: new Float64(), length: rows, data: x }),
    y: makeData({ type: new Int32(), length: rows, data: y }),
  };
  if (flagEvery > 0) cols.shoal_validation = makeData({ type: new Int8(), length: rows, data: flag });
  return new RecordBatch(cols as never);
}

const solo: ExchangeVectors = async (v) => [[...v]];

test('a list column becomes part of the features without listWidth; rows and steps counted from the stream', async () => {
  const bytes = tableToIPC(new Table([sparkBatch(0, 50, 4), sparkBatch(50, 30, 4)]), 'stream');
  const ds = await openArrowStream(bytes, { retain: true });
  const d = await trainingData(ds, ds, { features: ['v', 'x'], label: 'y', batchSize: 16 }, solo);
  assert.ok(isTrainingData(d));
  assert.equal([d.rows, d.stepsPerEpoch, d.widths.features, d.widths.label], [80, 5, 5, 1]);
  assert.is(d.validation, undefined);
  for (const epoch of [0, 1]) {
    let n = 0;
    for await (const b of d.batches(epoch)) {
      assert.is(b.size, 16);
      for (let r = 0; r < b.size; r++) {
        const i = n + r;
        assert.equal(Array.from(b.columns.features!.subarray(r * 5, r * 5 + 5)), [i * 10, i * 10 + 1, i * 10 + 2, i * 10 + 3, -i]);
        assert.is(b.columns.label![r], i % 3);
      }
      n += b.size;
    }
    assert.is(n, 80);
  }
  await d.close();
});

test('validation rows (flag column) are held apart, in order; the rest trains', async () => {
  const bytes = tableToIPC(new Table([sparkBatch(0, 40, 2, 4), sparkBatch(40, 24, 2, 4)]), 'stream');
  const ds = await openArrowStream(bytes, { retain: true });
  const d = await trainingData(ds, ds, { features: ['v'], label: 'y', batchSize: 8 }, solo);
  assert.equal([d.rows, d.stepsPerEpoch, d.validation!.rows], [48, 6, 16]);
  const valIds = Array.from({ length: 16 }, (_, k) => k * 4);
  assert.equal(Array.from(d.validation!.features.filter((_, j) => j % 2 === 0)), valIds.map((i) => i * 10));
  assert.equal(Array.from(d.validation!.label), valIds.map((i) => i % 3));
  const seen: number[] = [];
  for await (const b of d.batches(0)) for (let r = 0; r < b.size; r++) seen.push(b.columns.features![r * 2]! / 10);
  assert.equal(seen, Array.from({ length: 64 }, (_, i) => i).filter((i) => i % 4 !== 0));
});

test('steps: min of every rank by default, wrap on request; 0 agreed steps names the small rank', async () => {
  const open = async (rows: number) => {
    const ds = await openArrowStream(tableToIPC(new Table([sparkBatch(0, rows, 3)]), 'stream'), { retain: true });
    return ds;
  };
  // Two ranks simulated: this one has 70 rows (4 steps of 16), the other 40 (2 steps).
  const twoRanks = (other: number[]): ExchangeVectors => async (v) => [[...v], other];
  const a = await trainingData(await open(70), await open(0), { features: ['v'], label: 'y', batchSize: 16 }, twoRanks([2, 3, 0]));
  assert.is(a.stepsPerEpoch, 2);
  const b = await trainingData(await open(70), await open(0), { features: ['v'], label: 'y', batchSize: 16, steps: 'wrap' }, twoRanks([2, 3, 0]));
  assert.is(b.stepsPerEpoch, 4);
  try {
    await trainingData(await open(70), await open(0), { features: ['v'], label: 'y', batchSize: 16 }, twoRanks([0, 0, 0]));
    assert.unreachable();
  } catch (e) {
    assert.ok(isShoalError(e) && e.code === 'ERR_DATA' && /rank 1 has fewer than batchSize=16/.test(e.message), String(e));
  }
  try {
    await trainingData(await open(70), await open(0), { features: ['v'], label: 'y', batchSize: 16 }, twoRanks([2, 5, 0]));
    assert.unreachable();
  } catch (e) {
    assert.ok(isShoalError(e) && /list column 'v' has 3 values per row on rank 0 but 5 elsewhere/.test(e.message), String(e));
  }
});

test('a rank with no rows learns the list width from the others; a missing column is named', async () => {
  const empty = await openArrowStream(tableToIPC(new Table([sparkBatch(0, 0, 3)]), 'stream'), { retain: true });
  const d = await trainingData(empty, empty, { features: ['v'], label: 'y', batchSize: 4, steps: 'wrap' }, async (v) => [[...v], [3, 3, 0]]);
  assert.equal([d.stepsPerEpoch, d.widths.features], [3, 3]);
  let n = 0;
  for await (const b of d.batches(0)) (n++, assert.is(b.size, 0));
  assert.is(n, 3);
  try {
    await trainingData(empty, empty, { features: ['nope'], label: 'y' }, solo);
    assert.unreachable();
  } catch (e) {
    assert.ok(isShoalError(e) && /missing column 'nope' \(have: v, x, y\)/.test(e.message), String(e));
  }
});

test.run();
