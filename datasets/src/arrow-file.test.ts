import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Float64, Int32, RecordBatch, Schema, Struct, Table, makeData, tableToIPC } from 'apache-arrow';
import { isShoalError } from '@shoal/core';
import { openArrowFile, batches } from './index.js';
import { exampleTable, FEATURES } from './test-fixtures.js';
import { expectData } from './testing/assert.js';

const dir = mkdtempSync(join(tmpdir(), 'shoal-arrow-file-'));


test('arrow file: each record batch is a partition with its row count; values round-trip', async () => {
  const p = join(dir, 'a.arrow');
  writeFileSync(p, tableToIPC(exampleTable([10, 0, 33]), 'file'));
  const ds = await openArrowFile(p);
  assert.equal(ds.partitions.map((x) => [x.name.slice(dir.length + 1), x.rows]), [['a.arrow#0', 10], ['a.arrow#1', 0], ['a.arrow#2', 33]]);
  const got: number[] = [];
  for await (const b of batches(ds, { features: ['features'], columns: ['id'], batchSize: 8 })) {
    for (let r = 0; r < b.size; r++) {
      got.push(b.columns.id![r]!);
      assert.is(b.columns.features![r * FEATURES + 15], b.columns.id![r]! + 15 / 16);
    }
  }
  assert.equal(got, Array.from({ length: 43 }, (_, i) => i));
  // A partition is read on its own, into one buffer its columns all view.
  for await (const c of ds.partitions[2]!.read({ columns: ['id', 'features', 'label'] })) {
    assert.is(c.rows, 33);
    assert.is(c.columns.id!.values[0], 10);
    assert.ok(c.columns.features!.values.buffer === c.columns.id!.values.buffer);
    assert.ok(c.columns.label!.values.buffer === c.columns.id!.values.buffer);
  }
});

test('arrow file directory: files in name order, hidden and _SUCCESS ignored', async () => {
  const d = join(dir, 'dir');
  mkdirSync(d);
  writeFileSync(join(d, 'part-1.arrow'), tableToIPC(exampleTable([4], 100), 'file'));
  writeFileSync(join(d, 'part-0.arrow'), tableToIPC(exampleTable([3], 0), 'file'));
  writeFileSync(join(d, '_SUCCESS'), '');
  writeFileSync(join(d, '.part-0.arrow.crc'), 'x');
  const ds = await openArrowFile(d);
  assert.is(ds.partitions.length, 2);
  const ids: number[] = [];
  for await (const b of batches(ds, { columns: ['id'], batchSize: 100 })) ids.push(...b.columns.id!);
  assert.equal(ids, [0, 1, 2, 100, 101, 102, 103]);
});

test('arrow file: wrong magic, corrupted footer, a stream passed as a file, schema mismatch, missing column', async () => {
  const good = tableToIPC(exampleTable([10, 10]), 'file');
  const wm = good.slice();
  wm[0] = 0x58;
  writeFileSync(join(dir, 'wm.arrow'), wm);
  await expectData(openArrowFile(join(dir, 'wm.arrow')), /wm\.arrow: not an Arrow IPC file: wrong magic/);
  const bf = good.slice();
  // The footer sits just before its 4-byte length and the trailing magic; scribble over it.
  for (let i = bf.length - 60; i < bf.length - 10; i++) bf[i] = 0xee;
  writeFileSync(join(dir, 'bf.arrow'), bf);
  await expectData(openArrowFile(join(dir, 'bf.arrow')), /bf\.arrow: malformed Arrow IPC file/);
  writeFileSync(join(dir, 'st.arrow'), tableToIPC(exampleTable([1]), 'stream'));
  await expectData(openArrowFile(join(dir, 'st.arrow')), /st\.arrow: not an Arrow IPC file/);
  await expectData(openArrowFile(join(dir, 'nope.arrow')), /nope\.arrow: cannot open/);

  const d = join(dir, 'mismatch');
  mkdirSync(d);
  writeFileSync(join(d, 'a.arrow'), tableToIPC(new Table([new RecordBatch({ id: makeData({ type: new Int32(), length: 2, data: new Int32Array([1, 2]) }) })]), 'file'));
  writeFileSync(join(d, 'b.arrow'), tableToIPC(new Table([new RecordBatch({ id: makeData({ type: new Float64(), length: 2, data: new Float64Array([1, 2]) }) })]), 'file'));
  await expectData(openArrowFile(d), /b\.arrow: schema mismatch: column 'id' is Float64 here but Int32 in .*a\.arrow/);

  const ds = await openArrowFile(join(dir, 'a.arrow'));
  assert.throws(() => batches(ds, { columns: ['nope'], batchSize: 1 }), (e: unknown) => isShoalError(e, 'ERR_DATA') && /missing column 'nope'/.test((e as Error).message));
  void Field;
});

test('null in a column: ERR_DATA naming the source and column, or replaced with fill', async () => {
  const valid = new Uint8Array([0b1011]);
  const b = new RecordBatch({
    x: makeData({ type: new Float64(), length: 4, nullCount: 1, nullBitmap: valid, data: new Float64Array([1, 2, 3, 4]) }),
  });
  const p = join(dir, 'nulls.arrow');
  writeFileSync(p, tableToIPC(new Table([b]), 'file'));
  const ds = await openArrowFile(p);
  await expectData(
    (async () => {
      for await (const _ of batches(ds, { columns: ['x'], batchSize: 2 })) void _;
    })(),
    /nulls\.arrow#0: column 'x' has 1 null values where none are allowed, the first at row 2 of this chunk/,
  );
  const vals: number[] = [];
  for await (const bt of batches(ds, { columns: ['x'], batchSize: 2, fill: { x: -1 } })) vals.push(...bt.columns.x!);
  assert.equal(vals, [1, 2, -1, 4]);
});

test('null in a column declared non-nullable: ERR_DATA even with a fill', async () => {
  const schema = new Schema([new Field('x', new Float64(), false)]);
  const x = makeData({ type: new Float64(), length: 3, nullCount: 1, nullBitmap: new Uint8Array([0b110]), data: new Float64Array([1, 2, 3]) });
  const b = new RecordBatch(schema, makeData({ type: new Struct(schema.fields), length: 3, nullCount: 0, children: [x] }));
  const p = join(dir, 'nonnull.arrow');
  writeFileSync(p, tableToIPC(new Table([b]), 'file'));
  const ds = await openArrowFile(p);
  assert.is(ds.schema.fields[0]!.nullable, false);
  await expectData(
    (async () => {
      for await (const _ of batches(ds, { columns: ['x'], batchSize: 2, fill: { x: 0 } })) void _;
    })(),
    /nonnull\.arrow#0: column 'x' is declared non-nullable \(Float64\) but holds 1 nulls/,
  );
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
