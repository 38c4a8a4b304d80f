import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Float64, Int8, Int32, List, RecordBatch, Struct, Table, makeData, tableToIPC } from 'apache-arrow';
import { isShoalError } from '@shoal/core';
import { isTrainingData, openArrowFile, openArrowStream, openData, trainingData, type ExchangeVectors } from './index.js';

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

type Vec = number[] | { size: number; indices: number[]; values: number[] };

/** Spark ML vectors as Spark writes them: struct<type int8, size int32, indices list<int32>, values list<double>>. */
function vectorBatch(vecs: Vec[]): RecordBatch {
  const rows = vecs.length;
  const f64 = new List(new Field('element', new Float64(), true));
  const i32 = new List(new Field('element', new Int32(), true));
  const type = new Struct([new Field('type', new Int8(), false), new Field('size', new Int32(), true), new Field('indices', i32, true), new Field('values', f64, true)]);
  const kinds = Int8Array.from(vecs, (v) => (Array.isArray(v) ? 1 : 0));
  const sizes = Int32Array.from(vecs, (v) => (Array.isArray(v) ? 0 : v.size));
  const vals = vecs.flatMap((v) => (Array.isArray(v) ? v : v.values));
  const idx = vecs.flatMap((v) => (Array.isArray(v) ? [] : v.indices));
  const vOff = new Int32Array(rows + 1);
  const iOff = new Int32Array(rows + 1);
  vecs.forEach((v, r) => {
    vOff[r + 1] = vOff[r]! + (Array.isArray(v) ? v.length : v.values.length);
    iOff[r + 1] = iOff[r]! + (Array.isArray(v) ? 0 : v.indices.length);
  });
  const vec = makeData({
    type,
    length: rows,
    nullCount: 0,
    children: [
      makeData({ type: new Int8(), length: rows, data: kinds }),
      makeData({ type: new Int32(), length: rows, data: sizes }),
      makeData({ type: i32, length: rows, nullCount: 0, valueOffsets: iOff, child: makeData({ type: new Int32(), length: idx.length, data: Int32Array.from(idx) }) }),
      makeData({ type: f64, length: rows, nullCount: 0, valueOffsets: vOff, child: makeData({ type: new Float64(), length: vals.length, data: Float64Array.from(vals) }) }),
    ],
  });
  return new RecordBatch({ features: vec, y: makeData({ type: new Int32(), length: rows, data: new Int32Array(rows) }) } as never);
}

test('Spark ML vectors (the struct Spark writes), dense and sparse, are features; unequal sizes are named', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ml-vector-'));
  try {
    const dense = Array.from({ length: 20 }, (_, r) => [r * 3, r * 3 + 1, r * 3 + 2].map((i) => i / 8));
    const mixed: Vec[] = [[1, 2, 3], { size: 3, indices: [0, 2], values: [4, 5] }, { size: 3, indices: [], values: [] }, [6, 7, 8]];
    writeFileSync(join(dir, 'a.arrow'), tableToIPC(new Table([vectorBatch(dense), vectorBatch(mixed)]), 'file'));
    const ds = await openArrowFile(join(dir, 'a.arrow'));
    assert.match(ds.schema.fields[0]!.sourceType, /^Spark ML vector/);
    const d = await trainingData(ds, ds, { features: ['features'], label: 'y', batchSize: 4 }, solo);
    assert.equal([d.widths.features, d.stepsPerEpoch], [3, 6]);
    const got: number[] = [];
    for await (const b of d.batches(0)) got.push(...b.columns.features!);
    assert.equal(got, [...dense.flat(), 1, 2, 3, 4, 0, 5, 0, 0, 0, 6, 7, 8]);
    const bad = await openArrowStream(tableToIPC(new Table([vectorBatch([[1, 2, 3], { size: 4, indices: [1], values: [1] }])]), 'stream'), { retain: true });
    try {
      await trainingData(bad, bad, { features: ['features'], label: 'y', batchSize: 1 }, solo);
      assert.unreachable();
    } catch (e) {
      assert.ok(isShoalError(e) && /vectors of different sizes \(row 0 has 3, row 1 has 4\)/.test(e.message), String(e));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('openData: CSV read as float32 columns; a folder mixing kinds is refused, naming them', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-open-data-'));
  try {
    writeFileSync(join(dir, 'a.csv'), 'x0,x1,y,extra\n1,2,0,zz\n3,4,1,zz\n');
    writeFileSync(join(dir, 'b.csv'), 'x0,x1,y,extra\n5,6,1,zz\n');
    const ds = await openData(dir, ['x0', 'x1', 'y']);
    const d = await trainingData(ds, ds, { features: ['x0', 'x1'], label: 'y', batchSize: 1 }, solo);
    const rows: number[][] = [];
    for await (const b of d.batches(0)) rows.push([...b.columns.features!, ...b.columns.label!]);
    assert.equal(rows, [[1, 2, 0], [3, 4, 1], [5, 6, 1]]);
    await d.close();
    writeFileSync(join(dir, 'c.arrow'), tableToIPC(new Table([sparkBatch(0, 1, 1)]), 'file'));
    try {
      await openData(dir, ['x0']);
      assert.unreachable();
    } catch (e) {
      assert.ok(isShoalError(e) && /mixes arrow and csv files; keep one kind per folder/.test(e.message), String(e));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
