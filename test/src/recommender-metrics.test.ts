import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { inflateSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  CoOccurrence, crc32, encodePng, fuseTables, splitTables, evaluate, MostPopular, rankOfHidden, RepeatBuy, writeReport,
  type Baskets, type Recommender, type TestBaskets,
} from '../../examples/recommender/dist/index.js';

const baskets = (list: number[][], users: number[]): Baskets => {
  const offsets = new Int32Array(list.length + 1);
  list.forEach((b, i) => (offsets[i + 1] = offsets[i]! + b.length));
  return { offsets, items: Int32Array.from(list.flat()), users: Int32Array.from(users), times: Float64Array.from(list.map((_, i) => i)) };
};
const testSet = (visible: number[][], hidden: number[], users: number[]): TestBaskets => ({ ...baskets(visible, users), hidden: Int32Array.from(hidden) });

/** Scores from a fixed table: row b of `table` for test basket b. */
class Fixed implements Recommender {
  readonly name = 'fixed';
  constructor(private readonly table: number[][]) {}
  scoreBatch(_t: TestBaskets, from: number, to: number, out: Float32Array): void {
    for (let b = from; b < to; b++) out.set(this.table[b]!, (b - from) * this.table[b]!.length);
  }
}

test('rank of the hidden item skips visible items and counts ties against it', () => {
  const s = Float32Array.from([5, 9, 3, 9, 1]);
  assert.is(rankOfHidden(s, 0, 5, 0, []), 2); // items 1 and 3 score higher
  assert.is(rankOfHidden(s, 0, 5, 0, [1]), 1); // item 1 is in the basket: not a competitor
  assert.is(rankOfHidden(s, 0, 5, 1, []), 1); // tie with item 3 counts against
  assert.is(rankOfHidden(Float32Array.from([0, 0, 0]), 0, 3, 2, []), 2); // constant scorer: worst rank
});

test('HR@k and NDCG@k on known answers', async () => {
  // 4 baskets over 12 items; hidden ranks 0, 1, 9 and 10.
  const n = 12;
  const row = (hidden: number, rank: number): number[] => {
    const r = Array.from({ length: n }, (_, j) => n - j); // item 0 best
    const order = Array.from({ length: n }, (_, j) => j).filter((j) => j !== hidden);
    order.splice(rank, 0, hidden);
    order.forEach((j, pos) => (r[j] = n - pos));
    return r;
  };
  const t = testSet([[], [], [], []], [3, 5, 7, 11], [0, 0, 0, 0]);
  const m = await evaluate(new Fixed([row(3, 0), row(5, 1), row(7, 9), row(11, 10)]), t, n, 10, 3);
  assert.is(m.n, 4);
  assert.is(m.hr, 3 / 4);
  assert.ok(Math.abs(m.ndcg - (1 + 1 / Math.log2(3) + 1 / Math.log2(11)) / 4) < 1e-12, String(m.ndcg));
  assert.ok(Math.abs(m.mrr - (1 + 1 / 2 + 1 / 10 + 1 / 11) / 4) < 1e-12);
  const m5 = await evaluate(new Fixed([row(3, 0), row(5, 1), row(7, 9), row(11, 10)]), t, n, 5);
  assert.is(m5.hr, 2 / 4);
});

// Training: item 0 is the most popular; 1 and 2 always go together; user 1 buys item 4 repeatedly.
const train = baskets([[0, 3], [0, 5], [0, 6], [1, 2], [1, 2, 0], [4, 3], [4, 5]], [2, 2, 2, 3, 3, 1, 1]);

test('most-popular ranks by training-basket count', async () => {
  const out = new Float32Array(7);
  new MostPopular(train, 7).scoreBatch(testSet([[1]], [2], [0]), 0, 1, out);
  assert.equal(Array.from(out), [4, 2, 2, 2, 2, 2, 1]);
  const m = await evaluate(new MostPopular(train, 7), testSet([[1], [3]], [0, 6], [0, 0]), 7);
  assert.is(m.hr, 1); // 7 items: everything is in the top 10
});

test('co-occurrence scores by baskets shared with the visible items, ties by popularity', async () => {
  const rec = new CoOccurrence(train, 7);
  const out = new Float32Array(7);
  rec.scoreBatch(testSet([[1]], [2], [0]), 0, 1, out);
  assert.is(Math.round(out[2]!), 2); // 1 and 2 share two baskets
  assert.is(Math.round(out[0]!), 1);
  assert.ok(out[3]! < 0.01 && out[3]! > out[6]!, 'no co-occurrence: popularity tie-break only');
  const m = await evaluate(rec, testSet([[1]], [2], [0]), 7, 1);
  assert.is(m.hr, 1); // item 2 ranks first among non-visible items
  const pop = await evaluate(new MostPopular(train, 7), testSet([[1]], [2], [0]), 7, 1);
  assert.is(pop.hr, 0); // most-popular puts item 0 first
});

test('repeat-buy scores the user\'s own history; unknown users get popularity', () => {
  const rec = new RepeatBuy(train, 7);
  const out = new Float32Array(14);
  rec.scoreBatch(testSet([[3], [3]], [4, 4], [1, 0]), 0, 2, out);
  assert.is(Math.round(out[4]!), 2);
  assert.ok(out[7 + 0]! > out[7 + 4]!, 'unknown user: popularity order');
});

test('png encoder: signature, IHDR, CRCs, and pixels round-trip through inflate', () => {
  assert.is(crc32(Buffer.from('123456789')), 0xcbf43926);
  const rgb = new Uint8Array(3 * 2 * 3).map((_, i) => i * 10);
  const png = encodePng(3, 2, rgb);
  assert.equal(Array.from(png.subarray(0, 8)), [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  let off = 8;
  const chunks: Record<string, Buffer> = {};
  while (off < png.length) {
    const len = png.readUInt32BE(off), type = png.toString('latin1', off + 4, off + 8);
    assert.is(png.readUInt32BE(off + 8 + len), crc32(png.subarray(off + 4, off + 8 + len)), `${type} crc`);
    chunks[type] = png.subarray(off + 8, off + 8 + len);
    off += 12 + len;
  }
  assert.is(chunks.IHDR!.readUInt32BE(0), 3);
  assert.is(chunks.IHDR!.readUInt32BE(4), 2);
  const raw = inflateSync(chunks.IDAT!);
  assert.equal(Array.from(raw), [0, ...rgb.subarray(0, 9), 0, ...rgb.subarray(9)]);
  assert.ok('IEND' in chunks);
});

test('report: Markdown and the four PNG plots are written', () => {
  const dir = mkdtempSync(join(tmpdir(), 'rec-report-'));
  try {
    const m = { hr: 0.2, ndcg: 0.1, mrr: 0.09, k: 10, n: 100 };
    const epoch = (e: number) => ({
      epoch: e, loss: 5 - e, steps: 10, samples: 5120, seconds: 2, samplesPerSec: 2560, sparseRowsPerStep: 100,
      tableRows: { user_embedding: { rowsPerStep: 50, numRows: 1000 } }, sparseBytesPerStep: 12_800, tableBytes: 128_000,
      wireBytesPerStep: 20_000, metrics: { ...m, hr: 0.1 * e }, computeSeconds: 1, syncSeconds: 0.5, applySeconds: 0.5,
      tables: 'server' as const, pulledRowsPerStep: 50, pullBytesPerStep: 6600, pushBytesPerStep: 6600, psWireBytesPerStep: 14_000, heldTableBytes: 6400,
    });
    const path = writeReport(dir, {
      title: 't', command: 'demo', wallSeconds: 10,
      dataset: { name: 'd', attribution: 'a', numItems: 10, numUsers: 5, prepareMs: 5, cached: false, stats: {
        rawRows: 1, droppedEmptyUser: 0, droppedCancelled: 0, droppedQuantity: 0, droppedItem: 0, keptRows: 1, baskets: 1,
        trainBaskets: 1, testPeriodBaskets: 1, testBaskets: 1, testColdUsers: 0, cutoff: 'x', firstDay: 'x', lastDay: 'x' } },
      baselines: { 'most-popular': { ...m, hr: 0.05 } },
      train: { backend: 'hybrid', workers: 2, tfjs: 'tfjs', epochs: [epoch(1), epoch(2)], final: m, trainSeconds: 4, bytesSent: 1, showcase: [] },
    });
    const md = readFileSync(path, 'utf8');
    assert.match(md, /\| \*\*model\*\* \(hybrid, 2 workers, 2 epochs\) \| 20\.00% \| 0\.1000 \| 0\.0900 \| \+300% \|/);
    assert.match(md, /\| user_embedding \| 1000 \| 50 \| 5\.00% \|/);
    assert.match(md, /Pulled 50 rows per step: 6\.4 KiB pulled \+ 6\.4 KiB pushed/);
    for (const f of ['loss.png', 'hr10.png', 'hr10-bars.png', 'samples-per-sec.png', 'results.json']) assert.ok(existsSync(join(dir, f)), f);
    assert.is(readFileSync(join(dir, 'hr10.png')).readUInt32BE(16), 720);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tables fuse into one row-sparse tensor and split back exactly', () => {
  const a = { name: 'a', numRows: 3, rowSize: 2, rowIds: Int32Array.of(0, 2), rows: Float32Array.of(1, 2, 3, 4) };
  const b = { name: 'b', numRows: 4, rowSize: 3, rowIds: Int32Array.of(1, 3), rows: Float32Array.of(5, 6, 7, 8, 9, 10) };
  const f = fuseTables([a, b]);
  assert.equal(Array.from(f.rowIds), [0, 2, 4, 6]);
  assert.is(f.numRows, 7);
  assert.equal(Array.from(f.rows), [1, 2, 0, 3, 4, 0, 5, 6, 7, 8, 9, 10]);
  const [a2, b2] = splitTables(f, [a, b]);
  assert.equal(Array.from(a2!.rowIds), [0, 2]);
  assert.equal(Array.from(a2!.rows), [1, 2, 3, 4]);
  assert.equal(Array.from(b2!.rowIds), [1, 3]);
  assert.equal(Array.from(b2!.rows), [5, 6, 7, 8, 9, 10]);
  // A merged result may hold other ranks' rows too.
  const merged = { ...f, rowIds: Int32Array.of(1, 5), rows: Float32Array.of(1, 1, 9, 2, 2, 2) };
  const [a3, b3] = splitTables(merged, [a, b]);
  assert.equal(Array.from(a3!.rowIds), [1]);
  assert.equal(Array.from(b3!.rowIds), [2]);
  assert.equal(Array.from(b3!.rows), [2, 2, 2]);
  assert.throws(() => splitTables({ ...f, rowIds: Int32Array.of(7), rows: new Float32Array(3) }, [a, b]), /outside the fused tables/);
});

test.run();
