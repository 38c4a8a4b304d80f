/**
 * `worker.data()` under `shoal run --data DIR` (launch({ data })): the digits MLP script test/dist/fit-worker.js
 * over Arrow files with an array column (no listWidth anywhere), as processes and as threads, and the same
 * script as TypeScript (.mts) in both modes: every run trains (loss falls) and ends with identical weights.
 * A validation flag column becomes val_* metrics. (The Spark side of the same script: python/tests/test_fit.py.)
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { Field, Float32, Int8, Int32, List, RecordBatch, Table, makeData, tableToIPC } from 'apache-arrow';
import { launch } from '@shoal/run';

const REPO = new URL('../..', import.meta.url).pathname;
const WORKER = join(REPO, 'test/dist/fit-worker.js');
const dir = mkdtempSync(join(tmpdir(), 'shoal-worker-data-'));

/** The first `n` digits as rows (64 pixels / 16, label), from data/digits. */
function digits(n: number): { px: Float32Array; label: Int32Array } {
  const lines = gunzipSync(readFileSync(join(REPO, 'data/digits/digits.csv.gz'))).toString().trim().split('\n').slice(0, n);
  const px = new Float32Array(n * 64);
  const label = new Int32Array(n);
  lines.forEach((l, r) => {
    const v = l.split(',').map(Number);
    for (let j = 0; j < 64; j++) px[r * 64 + j] = v[j]! / 16;
    label[r] = v[64]!;
  });
  return { px, label };
}

/** One Arrow file per part: `pixels` list<float32> (what Spark's array<float> is), `label` int32, optional flag. */
function writeParts(root: string, parts: number, rowsPer: number, flagEvery = 0): void {
  mkdirSync(root, { recursive: true });
  const { px, label } = digits(parts * rowsPer);
  for (let p = 0; p < parts; p++) {
    const lo = p * rowsPer;
    const offsets = Int32Array.from({ length: rowsPer + 1 }, (_, i) => i * 64);
    const list = new List(new Field('element', new Float32(), false));
    const cols: Record<string, ReturnType<typeof makeData>> = {
      pixels: makeData({ type: list, length: rowsPer, nullCount: 0, valueOffsets: offsets, child: makeData({ type: new Float32(), length: rowsPer * 64, data: px.slice(lo * 64, (lo + rowsPer) * 64) }) }),
      label: makeData({ type: new Int32(), length: rowsPer, data: label.slice(lo, lo + rowsPer) }),
    };
    if (flagEvery > 0) cols.shoal_validation = makeData({ type: new Int8(), length: rowsPer, data: Int8Array.from({ length: rowsPer }, (_, i) => ((lo + i) % flagEvery === 0 ? 1 : 0)) });
    writeFileSync(join(root, `part-${String(p).padStart(5, '0')}.arrow`), tableToIPC(new Table([new RecordBatch(cols as never)]), 'file'));
  }
}

interface Result {
  history: { loss: number; val_loss?: number; val_accuracy?: number }[];
  steps: number;
  rows: number;
  validationRows: number | null;
  weights: number[];
}

async function run(script: string, data: string, threads: boolean): Promise<Result> {
  const chunks: string[] = [];
  const err: string[] = [];
  const r = await launch({
    script,
    numWorkers: 2,
    threads,
    data,
    args: ['--epochs', '3'],
    timeoutMs: 60_000,
    jobTimeoutMs: 120_000,
    stdout: new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }),
    stderr: new Writable({ write: (c, _e, cb) => (err.push(String(c)), cb()) }),
  });
  assert.is(r.code, 0, `${script} (${threads ? 'threads' : 'processes'}) failed: ${r.error}\n${err.join('').slice(-3000)}`);
  const line = chunks.join('').split('\n').find((l) => l.includes('SHOAL_RESULT '));
  assert.ok(line, 'rank 0 printed a SHOAL_RESULT line');
  return JSON.parse(line!.split('SHOAL_RESULT ')[1]!) as Result;
}

const plain = join(dir, 'plain');
writeParts(plain, 2, 400);

test('shoal run --data: an array column trains without listWidth; processes and threads agree exactly', async () => {
  const a = await run(WORKER, plain, false);
  assert.equal([a.steps, a.rows, a.validationRows], [12, 400, null]);
  assert.is(a.history.length, 3);
  assert.ok(a.history[2]!.loss < a.history[0]!.loss * 0.8, `loss fell: ${a.history.map((h) => h.loss).join(' -> ')}`);
  const b = await run(WORKER, plain, true);
  assert.equal(b.weights, a.weights);
});

test('a TypeScript worker (.mts) runs as processes and as threads, with the same result', async () => {
  // The test's own source, compiled by tsx at launch instead of tsc.
  const ts = join(REPO, 'test/src/fit-worker.ts');
  const mts = join(REPO, 'test/dist/fit-worker-copy.mts');
  copyFileSync(ts, mts);
  try {
    const js = await run(WORKER, plain, false);
    const p = await run(mts, plain, false);
    const t = await run(mts, plain, true);
    assert.equal(p.weights, js.weights);
    assert.equal(t.weights, js.weights);
  } finally {
    rmSync(mts, { force: true });
  }
});

test('a shoal_validation column: flagged rows are held out and scored as val_* every epoch', async () => {
  const flagged = join(dir, 'flagged');
  writeParts(flagged, 2, 400, 5);
  const r = await run(WORKER, flagged, false);
  assert.equal([r.rows, r.validationRows, r.steps], [320, 80, 10]);
  for (const h of r.history) assert.ok(Number.isFinite(h.val_loss) && Number.isFinite(h.val_accuracy), JSON.stringify(h));
  assert.ok(r.history[2]!.val_loss! < r.history[0]!.val_loss!, 'validation loss fell');
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
