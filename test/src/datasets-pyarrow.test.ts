/**
 * Data written by pyarrow (the C++ writers Spark's Python side uses): an IPC stream piped from a Python process,
 * as a barrier task will send it, and a Hive-partitioned Parquet dataset (3-level LIST, int64, double, strings,
 * dictionary pages) written by pyarrow.parquet.write_to_dataset. Needs python3 with pyarrow (requirements.txt).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { batches, bytesSource, openArrowStream, openParquetDir, shard, verifyPageChecksums } from '@shoal/datasets';
import { isShoalError } from '@shoal/core';

const dir = mkdtempSync(join(tmpdir(), 'shoal-pyarrow-'));
const N = 5000;

const MAKE = `
import sys, pyarrow as pa, pyarrow.parquet as pq, pyarrow.ipc as ipc
N = ${N}
ids = pa.array(range(N), pa.int64())
label = pa.array([float(i % 3) for i in range(N)], pa.float64())
vec = pa.array([[float(i), i + 0.5, -float(i)] for i in range(N)], pa.list_(pa.float32()))
name = pa.array(['n%d' % (i % 7) for i in range(N)])
country = pa.array([['UK', 'FR', 'DE'][i % 3] for i in range(N)])
t = pa.table({'id': ids, 'label': label, 'vec': vec, 'name': name, 'country': country})
if sys.argv[1] == 'stream':
    w = ipc.new_stream(sys.stdout.buffer, t.schema)
    for b in t.to_batches(max_chunksize=777):
        w.write_batch(b)
    w.close()
else:
    pq.write_to_dataset(t, sys.argv[2], partition_cols=['country'], row_group_size=600)
`;

function py(args: string[]): { ok: boolean; err: string } {
  const r = spawnSync('python3', ['-c', MAKE, ...args], { encoding: 'utf8', timeout: 60_000 });
  return { ok: r.status === 0, err: `${r.stderr ?? ''}${r.error?.message ?? ''}` };
}

test('an Arrow IPC stream written by pyarrow through a pipe', async () => {
  const child = spawn('python3', ['-c', MAKE, 'stream'], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ds = await openArrowStream(child.stdout, { name: 'pyarrow stdout', idleTimeoutMs: 30_000 });
  assert.equal(ds.schema.fields.map((f) => `${f.name}:${f.kind}:${f.width}`), ['id:int64:1', 'label:float64:1', 'vec:float32:0', 'name:unsupported:1', 'country:unsupported:1']);
  const ids: number[] = [];
  for await (const b of batches(ds, { features: ['vec'], label: 'label', columns: ['id'], batchSize: 500, listWidth: { vec: 3 } })) {
    for (let r = 0; r < b.size; r++) {
      const id = b.columns.id![r]!;
      ids.push(id);
      assert.is(b.columns.label![r], id % 3);
      assert.is(b.columns.features![r * 3 + 1], id + 0.5);
      assert.is(b.columns.features![r * 3 + 2], -id);
    }
  }
  assert.equal(ids, Array.from({ length: N }, (_, i) => i));
  assert.throws(() => batches(ds, { columns: ['name'], batchSize: 1 }), /column 'name' has type Utf8, which cannot be batched/);
});


test('a Hive-partitioned Parquet dataset written by pyarrow, over 3 ranks', async () => {
  const out = join(dir, 'pq');
  const r = py(['parquet', out]);
  assert.ok(r.ok, `pyarrow writer failed: ${r.err}`);
  const ds = await openParquetDir(out, { granularity: 'rowGroup', threads: 1 });
  try {
    const country = ds.schema.fields.find((f) => f.name === 'country')!;
    assert.equal(country.dictionary, ['DE', 'FR', 'UK']);
    const ids: number[] = [];
    for (let rank = 0; rank < 3; rank++) {
      for await (const b of batches(shard(ds, rank, 3), { features: ['vec'], columns: ['id', 'country'], batchSize: 256, listWidth: { vec: 3 }, shuffle: { seed: 3, buffer: 100 } })) {
        for (let i = 0; i < b.size; i++) {
          const id = b.columns.id![i]!;
          ids.push(id);
          assert.is(country.dictionary![b.columns.country![i]!], ['UK', 'FR', 'DE'][id % 3]);
          assert.is(b.columns.features![i * 3], id);
        }
      }
    }
    assert.equal(ids.sort((a, b) => a - b), Array.from({ length: N }, (_, i) => i));
  } finally {
    await ds.close();
  }
});

const CHECKSUMMED = `
import sys, pyarrow as pa, pyarrow.parquet as pq
t = pa.table({'id': pa.array(range(4000), pa.int64()), 'x': pa.array([i * 0.25 for i in range(4000)], pa.float64())})
pq.write_table(t, sys.argv[1], compression='NONE', row_group_size=1000, write_page_checksum=(sys.argv[2] == 'crc'), use_dictionary=False)
cm = pq.ParquetFile(sys.argv[1]).metadata.row_group(2).column(1)
print(cm.data_page_offset + cm.total_compressed_size - 100)
`;

async function readAll(path: string, opts: { threads: number; verifyChecksums?: boolean }): Promise<number[]> {
  const ds = await openParquetDir(path, opts);
  try {
    const xs: number[] = [];
    for await (const b of batches(ds, { features: ['x'], batchSize: 1000 })) xs.push(...b.columns.features!);
    return xs;
  } finally {
    await ds.close();
  }
}

test('Parquet page checksums (pyarrow write_page_checksum): a flipped byte inside a page is ERR_DATA naming it', async () => {
  const good = join(dir, 'crc.parquet');
  const r = spawnSync('python3', ['-c', CHECKSUMMED, good, 'crc'], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  const inside = Number(r.stdout.trim());
  const bytes = readFileSync(good);
  assert.ok((await verifyPageChecksums(good, bytesSource(bytes))) >= 8, 'every page of both columns carries a CRC');
  assert.equal(await readAll(good, { threads: 0 }), Array.from({ length: 4000 }, (_, i) => i * 0.25));

  const bad = join(dir, 'crc-flipped.parquet');
  const flipped = Buffer.from(bytes);
  flipped[inside] ^= 0x40;
  writeFileSync(bad, flipped);
  for (const threads of [0, 1]) {
    try {
      await readAll(bad, { threads });
      assert.unreachable(`threads ${threads}: the corrupt page was accepted`);
    } catch (e) {
      assert.ok(isShoalError(e, 'ERR_DATA'), `threads ${threads}: ${String(e)}`);
      assert.match((e as Error).message, `${bad}: row group 2, column 'x': page at byte`);
      assert.match((e as Error).message, /fails its CRC-32 check/);
    }
  }
  // Only the column read is checked: the id column's pages are intact.
  const ds = await openParquetDir(bad, { threads: 0 });
  try {
    let n = 0;
    for await (const b of batches(ds, { columns: ['id'], batchSize: 1000 })) n += b.size;
    assert.is(n, 4000);
  } finally {
    await ds.close();
  }
  // Opting out decodes the flipped value as it is.
  const xs = await readAll(bad, { threads: 0, verifyChecksums: false });
  assert.is(xs.length, 4000);
  assert.ok(xs.some((x, i) => x !== i * 0.25), 'the flipped byte changed a value');

  const plain = join(dir, 'nocrc.parquet');
  assert.is(spawnSync('python3', ['-c', CHECKSUMMED, plain, 'none'], { timeout: 60_000 }).status, 0);
  assert.is(await verifyPageChecksums(plain, bytesSource(readFileSync(plain))), 0, 'a file without CRCs has nothing to check');
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
