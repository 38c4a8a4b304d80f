import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, writeFileSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, Float32, Float64, Int32, List, RecordBatch, Table, makeData, tableToIPC } from 'apache-arrow';
import { Compression, Table as WasmTable, WriterPropertiesBuilder, writeParquet } from 'parquet-wasm';
import { openParquetDir, shard, batches, type Dataset } from './index.js';
import { exampleTable, FEATURES } from './test-fixtures.js';
import { expectData } from './testing/assert.js';

const dir = mkdtempSync(join(tmpdir(), 'shoal-parquet-'));

function parquetBytes(t: Table, codec: Compression, rowGroup: number): Uint8Array {
  const props = new WriterPropertiesBuilder().setCompression(codec).setMaxRowGroupSize(rowGroup).build();
  return writeParquet(WasmTable.fromIPCStream(tableToIPC(t, 'stream')), props);
}

const UUID = '3f2a9c1e-7b4d-4e8a-9c0f-1d2e3f4a5b6c';
/** A Spark-like output: partitionBy(country), three codecs, _SUCCESS, .crc files and an empty part. */
function sparkDir(name: string): { path: string; ids: number[]; country: Map<number, string | null> } {
  const root = join(dir, name);
  const ids: number[] = [];
  const country = new Map<number, string | null>();
  const parts: [string, number, number, Compression, string][] = [
    ['country=UK', 0, 250, Compression.SNAPPY, 'snappy'],
    ['country=UK', 1000, 77, Compression.ZSTD, 'zstd'],
    ['country=FR', 2000, 130, Compression.UNCOMPRESSED, 'uncompressed'],
    ['country=FR', 3000, 0, Compression.SNAPPY, 'snappy'],
    ['country=__HIVE_DEFAULT_PARTITION__', 4000, 9, Compression.SNAPPY, 'snappy'],
  ];
  parts.forEach(([sub, start, rows, codec, ext], i) => {
    mkdirSync(join(root, sub), { recursive: true });
    const file = `part-${String(i).padStart(5, '0')}-${UUID}.c000.${ext}.parquet`;
    writeFileSync(join(root, sub, file), parquetBytes(exampleTable([rows], start), codec, 64));
    writeFileSync(join(root, sub, `.${file}.crc`), 'crc');
    for (let r = 0; r < rows; r++) {
      ids.push(start + r);
      country.set(start + r, sub.endsWith(HIVE) ? null : sub.slice('country='.length));
    }
  });
  writeFileSync(join(root, '_SUCCESS'), '');
  mkdirSync(join(root, '_temporary', '0'), { recursive: true });
  return { path: root, ids: ids.sort((a, b) => a - b), country };
}
const HIVE = '__HIVE_DEFAULT_PARTITION__';


test('Spark-like Parquet directory (uncompressed, snappy, zstd; partition folders) read in a worker thread', async () => {
  const { path, ids, country } = sparkDir('spark1');
  const ds = await openParquetDir(path, { threads: 1 });
  try {
    assert.equal(ds.partitions.map((p) => [p.name, p.rows]), [
      [`country=FR/part-00002-${UUID}.c000.uncompressed.parquet`, 130],
      [`country=FR/part-00003-${UUID}.c000.snappy.parquet`, 0],
      [`country=UK/part-00000-${UUID}.c000.snappy.parquet`, 250],
      [`country=UK/part-00001-${UUID}.c000.zstd.parquet`, 77],
      [`country=${HIVE}/part-00004-${UUID}.c000.snappy.parquet`, 9],
    ]);
    const cf = ds.schema.fields.find((f) => f.name === 'country')!;
    assert.is(cf.kind, 'dict');
    assert.equal(cf.dictionary, ['FR', 'UK']);
    const seen: number[] = [];
    for await (const b of batches(ds, { features: ['features'], label: 'label', columns: ['id', 'country'], batchSize: 50, fill: { country: -1 } })) {
      for (let r = 0; r < b.size; r++) {
        const id = b.columns.id![r]!;
        seen.push(id);
        assert.is(b.columns.features![r * FEATURES], id);
        assert.is(b.columns.features![r * FEATURES + 8], id + 0.5);
        assert.is(b.columns.label![r], id % 2);
        const c = country.get(id);
        assert.is(b.columns.country![r], c === null ? -1 : cf.dictionary!.indexOf(c!));
      }
    }
    assert.equal(seen.sort((a, b) => a - b), ids);
    // Without fill the null partition value is refused, naming the part and the column.
    await expectData(
      (async () => {
        for await (const _ of batches(ds, { columns: ['country'], batchSize: 1000 })) void _;
      })(),
      new RegExp(`country=${HIVE}/part-00004.*column 'country' has 9 null values`),
    );
  } finally {
    await ds.close();
  }
});

test('row groups as partitions, decoded inline; sharding over 1..7 ranks sees every row once', async () => {
  const { path, ids } = sparkDir('spark2');
  const ds = await openParquetDir(path, { granularity: 'rowGroup', threads: 0 });
  // 250 rows in row groups of 64 -> 4 groups, and so on; the empty part has no row group or one empty one.
  assert.ok(ds.partitions.length >= 4 + 2 + 3 + 1);
  for (let size = 1; size <= 7; size++) {
    const all: number[] = [];
    for (let rank = 0; rank < size; rank++) {
      for await (const b of batches(shard(ds, rank, size), { columns: ['id'], batchSize: 33, shuffle: { seed: size, buffer: 40 } })) all.push(...b.columns.id!);
    }
    assert.equal(all.sort((a, b) => a - b), ids, `size ${size}`);
  }
  await ds.close();
});

test('decoded columns are views on one transferred buffer (no per-column copy)', async () => {
  const { path } = sparkDir('spark3');
  const ds: Dataset = await openParquetDir(path, { threads: 1 });
  try {
    const part = ds.partitions.find((p) => p.rows === 250)!;
    for await (const c of part.read({ columns: ['id', 'label', 'features'] })) {
      const buf = c.columns.id!.values.buffer;
      assert.ok(c.columns.features!.values.buffer === buf);
      assert.ok(c.columns.label!.values.buffer === buf);
      assert.ok(buf.byteLength >= c.rows * (4 + 4 + 4 * FEATURES));
    }
  } finally {
    await ds.close();
  }
});

test('malformed Parquet: truncated, wrong magic, corrupted footer, schema mismatch, null in a column', async () => {
  const good = parquetBytes(exampleTable([100]), Compression.SNAPPY, 1000);
  const mk = (name: string, bytes: Uint8Array | string) => {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'part-00000.parquet'), bytes);
    return d;
  };
  await expectData(openParquetDir(mk('trunc', good.slice(0, good.length - 30))), /trunc\/part-00000\.parquet: malformed Parquet file/);
  const wm = good.slice();
  wm[wm.length - 1] = 0x30;
  await expectData(openParquetDir(mk('magic', wm)), /magic\/part-00000\.parquet: malformed Parquet file/);
  const cf = good.slice();
  const footerLen = new DataView(cf.buffer).getInt32(cf.length - 8, true);
  for (let i = cf.length - 8 - footerLen; i < cf.length - 8; i += 3) cf[i] = 0xfd;
  await expectData(openParquetDir(mk('footer', cf)), /footer\/part-00000\.parquet: malformed Parquet file/);

  const mm = join(dir, 'mismatch');
  mkdirSync(mm);
  const ints = new Table([new RecordBatch({ x: makeData({ type: new Int32(), length: 2, data: new Int32Array([1, 2]) }) })]);
  const floats = new Table([new RecordBatch({ x: makeData({ type: new Float64(), length: 2, data: new Float64Array([1, 2]) }) })]);
  writeFileSync(join(mm, 'part-00000.parquet'), parquetBytes(ints, Compression.SNAPPY, 10));
  writeFileSync(join(mm, 'part-00001.parquet'), parquetBytes(floats, Compression.SNAPPY, 10));
  await expectData(openParquetDir(mm), /part-00001\.parquet: schema mismatch: column 'x' is Float64 here but Int32 in .*part-00000\.parquet/);

  const withNull = new Table([
    new RecordBatch({
      label: makeData({ type: new Float32(), length: 3, nullCount: 1, nullBitmap: new Uint8Array([0b101]), data: new Float32Array([1, 0, 3]) }),
    }),
  ]);
  const nd = mk('nulls', parquetBytes(withNull, Compression.ZSTD, 10));
  const ds = await openParquetDir(nd, { threads: 1 });
  try {
    await expectData(
      (async () => {
        for await (const _ of batches(ds, { label: 'label', batchSize: 2 })) void _;
      })(),
      /part-00000\.parquet: column 'label' has 1 null values where none are allowed/,
    );
    // Corrupt data pages (footer intact) fail at decode time, in the worker, naming the file.
    const body = parquetBytes(exampleTable([200]), Compression.SNAPPY, 1000);
    for (let i = 8; i < 400; i++) body[i] = 0x5a;
    const bd = mk('body', body);
    const ds2 = await openParquetDir(bd, { threads: 1 });
    try {
      await expectData(
        (async () => {
          for await (const _ of batches(ds2, { features: ['features'], batchSize: 64 })) void _;
        })(),
        /body\/part-00000\.parquet: malformed Parquet file/,
      );
    } finally {
      await ds2.close();
    }
  } finally {
    await ds.close();
  }
  // A single file works too; a missing path is named.
  const single = await openParquetDir(join(dir, 'nulls', 'part-00000.parquet'), { threads: 0 });
  assert.equal(single.partitions.map((p) => [p.name, p.rows]), [['part-00000.parquet', 3]]);
  await single.close();
  await expectData(openParquetDir(join(dir, 'nope')), /nope: cannot open/);
  // An empty Spark result: only _SUCCESS.
  const empty = join(dir, 'empty');
  mkdirSync(empty);
  writeFileSync(join(empty, '_SUCCESS'), '');
  const e = await openParquetDir(empty);
  assert.is(e.partitions.length, 0);
  await e.close();
});

test("Spark's array<float> (Parquet LIST -> Arrow List<Float32>) as fixed-width features; ragged rows refused", async () => {
  const listTable = (lens: number[]) => {
    const offsets = new Int32Array(lens.length + 1);
    lens.forEach((n, i) => (offsets[i + 1] = offsets[i]! + n));
    const vals = Float32Array.from({ length: offsets[lens.length]! }, (_, i) => i);
    const type = new List(new Field('element', new Float32(), true));
    return new Table([
      new RecordBatch({
        id: makeData({ type: new Int32(), length: lens.length, data: Int32Array.from(lens, (_, i) => i) }),
        vec: makeData({ type, length: lens.length, nullCount: 0, valueOffsets: offsets, child: makeData({ type: new Float32(), length: vals.length, data: vals }) }),
      }),
    ]);
  };
  const d = join(dir, 'lists');
  mkdirSync(d);
  writeFileSync(join(d, 'part-00000.parquet'), parquetBytes(listTable(Array(300).fill(4)), Compression.SNAPPY, 128));
  const ds = await openParquetDir(d, { threads: 1 });
  try {
    assert.is(ds.schema.fields.find((f) => f.name === 'vec')!.width, 0);
    assert.throws(() => batches(ds, { features: ['vec'], batchSize: 10 }), /variable-length .*listWidth/);
    const got: number[] = [];
    for await (const b of batches(ds, { features: ['vec'], columns: ['id'], batchSize: 64, listWidth: { vec: 4 } })) {
      assert.is(b.widths.features, 4);
      for (let r = 0; r < b.size; r++) {
        const id = b.columns.id![r]!;
        got.push(id);
        for (let j = 0; j < 4; j++) assert.is(b.columns.features![r * 4 + j], id * 4 + j);
      }
    }
    assert.equal(got, Array.from({ length: 300 }, (_, i) => i));
    await expectData(
      (async () => {
        for await (const _ of batches(ds, { features: ['vec'], batchSize: 64, listWidth: { vec: 5 } })) void _;
      })(),
      /part-00000\.parquet: column 'vec' has 4 values per row here but 5/,
    );
  } finally {
    await ds.close();
  }
  writeFileSync(join(d, 'part-00001.parquet'), parquetBytes(listTable([4, 4, 3, 4]), Compression.SNAPPY, 128));
  const ds2 = await openParquetDir(d, { threads: 0 });
  await expectData(
    (async () => {
      for await (const _ of batches(ds2, { features: ['vec'], batchSize: 64, listWidth: { vec: 4 } })) void _;
    })(),
    /part-00001\.parquet: column 'vec' is a list of varying length \(row 0 has 4 values, row 2 has 3\)/,
  );
  await ds2.close();
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
