/**
 * The datasets package across processes: an Arrow IPC stream piped into a worker's stdin (how a Spark barrier task
 * hands over its partition), and ranks in separate processes agreeing on partition assignment and steps.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Field, FixedSizeList, Float32, Int32, RecordBatch, Table, makeData, tableToIPC } from 'apache-arrow';
import { Compression, Table as WasmTable, WriterPropertiesBuilder, writeParquet } from 'parquet-wasm';
import { agreeSteps } from '@shoal/datasets';

const WORKER = new URL('./datasets-worker.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'shoal-datasets-proc-'));

function table(start: number, sizes: number[]): Table {
  const out: RecordBatch[] = [];
  let at = start;
  for (const n of sizes) {
    const id = Int32Array.from({ length: n }, (_, i) => at + i);
    const label = Float32Array.from({ length: n }, (_, i) => (at + i) % 3);
    const feats = Float32Array.from({ length: n * 4 }, (_, i) => at + Math.floor(i / 4));
    out.push(
      new RecordBatch({
        id: makeData({ type: new Int32(), length: n, data: id }),
        label: makeData({ type: new Float32(), length: n, data: label }),
        features: makeData({
          type: new FixedSizeList(4, new Field('e', new Float32(), false)),
          length: n,
          nullCount: 0,
          child: makeData({ type: new Float32(), length: n * 4, data: feats }),
        }),
      }),
    );
    at += n;
  }
  return new Table(out);
}

interface Out {
  rows: number;
  batches: number;
  localSteps?: number;
  labelSum?: number;
  ids?: number[];
  error?: string;
  code?: string;
}

function runWorker(args: string[], stdin?: Uint8Array, pieces = 4096): Promise<{ code: number | null; out: Out }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [WORKER, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d) => (text += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 120_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve({ code, out: JSON.parse(text.trim().split('\n').pop()!) as Out });
      } catch (e) {
        reject(new Error(`worker printed ${JSON.stringify(text)} (exit ${code}): ${String(e)}`));
      }
    });
    if (!stdin) return void child.stdin.end();
    let at = 0;
    const pump = () => {
      while (at < stdin.length) {
        const piece = stdin.subarray(at, Math.min(stdin.length, at + pieces));
        at += piece.length;
        if (!child.stdin.write(piece)) return void child.stdin.once('drain', pump);
      }
      child.stdin.end();
    };
    child.stdin.on('error', () => undefined);
    pump();
  });
}

test('an Arrow stream piped into a worker process stdin is read whole', async () => {
  const t = table(0, [10_000, 0, 10_000, 3_333]);
  const { code, out } = await runWorker(['stdin', '1000'], tableToIPC(t, 'stream'));
  assert.is(code, 0, JSON.stringify(out));
  assert.is(out.rows, 23_333);
  assert.is(out.batches, 24);
  let want = 0;
  for (let i = 0; i < 23_333; i++) want += i % 3;
  assert.is(out.labelSum, want);
});

test('a stream cut short on stdin makes the worker fail with ERR_DATA, after no partial batch', async () => {
  const bytes = tableToIPC(table(0, [5000, 5000]), 'stream');
  const { code, out } = await runWorker(['stdin', '1000'], bytes.subarray(0, bytes.length - 8));
  assert.is(code, 1);
  assert.is(out.code, 'ERR_DATA');
  assert.match(out.error!, /stdin: truncated Arrow IPC stream/);
  const mid = await runWorker(['stdin', '1000'], bytes.subarray(0, bytes.length - 30_000));
  assert.is(mid.code, 1);
  assert.match(mid.out.error!, /stdin: truncated Arrow IPC stream: input ended inside message \d+/);
});

test('5 rank processes over a Parquet directory: each row once per epoch, agreed steps honoured by every rank', async () => {
  const d = join(dir, 'pq');
  mkdirSync(d);
  const sizes = [[1200], [0], [17, 300], [5], [999, 1]];
  let start = 0;
  let total = 0;
  sizes.forEach((s, i) => {
    const props = new WriterPropertiesBuilder().setCompression(Compression.SNAPPY).setMaxRowGroupSize(256).build();
    writeFileSync(join(d, `part-0000${i}-x.c000.snappy.parquet`), writeParquet(WasmTable.fromIPCStream(tableToIPC(table(start, s), 'stream')), props));
    const n = s.reduce((a, b) => a + b, 0);
    start += n;
    total += n;
  });
  writeFileSync(join(d, '_SUCCESS'), '');
  const size = 5;
  const first = await Promise.all(Array.from({ length: size }, (_, r) => runWorker(['parquet', d, String(r), String(size), '100'])));
  const ids = first.flatMap((f) => {
    assert.is(f.code, 0, JSON.stringify(f.out));
    return f.out.ids!;
  });
  assert.equal(ids.sort((a, b) => a - b), Array.from({ length: total }, (_, i) => i));
  const counts = first.map((f) => f.out.localSteps!);
  for (const policy of ['wrap', 'min'] as const) {
    const steps = agreeSteps(counts, policy);
    const second = await Promise.all(Array.from({ length: size }, (_, r) => runWorker(['parquet', d, String(r), String(size), '100', String(steps)])));
    for (const s of second) {
      assert.is(s.code, 0, JSON.stringify(s.out));
      assert.is(s.out.batches, steps, `${policy}: every rank runs the agreed ${steps} steps`);
    }
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
