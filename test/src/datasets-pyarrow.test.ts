/**
 * Data written by pyarrow (the C++ writers Spark's Python side uses): an IPC stream piped from a Python process,
 * as a barrier task will send it, and a Hive-partitioned Parquet dataset (3-level LIST, int64, double, strings,
 * dictionary pages) written by pyarrow.parquet.write_to_dataset. Needs python3 with pyarrow (requirements.txt).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { batches, openArrowStream, openParquetDir, shard } from '@shoal/datasets';

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

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
