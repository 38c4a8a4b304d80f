import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { setupTfjs } from '@shoal/wrappers';
import {
  bootstrapCi, CoOccurrence, cosineWeights, easeFromInverse, easeInverse, gramMatrix, historyLists, ItemItem,
  itemItemInverse, spdInverse, spdInverseTf, evaluate, MostPopular, rankOfHidden, RepeatBuy, wideFeatures, writeReport,
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

test('report: Markdown and the four PNG charts (vega-lite, rendered by resvg) are written', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'rec-report-'));
  try {
    const m = { hr: 0.2, ndcg: 0.1, mrr: 0.09, k: 10, n: 100, ci: { hr: [0.15, 0.25] as [number, number], ndcg: [0.08, 0.12] as [number, number], mrr: [0.07, 0.11] as [number, number] } };
    const epoch = (e: number) => ({
      epoch: e, loss: 5 - e, steps: 10, samples: 5120, seconds: 2, samplesPerSec: 2560, sparseRowsPerStep: 100,
      tableRows: { user_embedding: { rowsPerStep: 50, numRows: 1000 } }, sparseBytesPerStep: 12_800, tableBytes: 128_000,
      wireBytesPerStep: 20_000, metrics: { ...m, hr: 0.1 * e }, computeSeconds: 1, syncSeconds: 0.5, syncSecondsByRank: [0.5, 0.7], applySeconds: 0.5,
      tables: 'server' as const, pulledRowsPerStep: 50, pullBytesPerStep: 6600, pushBytesPerStep: 6600, psWireBytesPerStep: 14_000, heldTableBytes: 6400, evalHr: 0.1 * e,
    });
    const path = await writeReport(dir, {
      title: 't', command: 'demo', wallSeconds: 10,
      dataset: { name: 'd', attribution: 'a', numItems: 10, numUsers: 5, prepareMs: 5, cached: false,
        words: { basket: 'session', baskets: 'sessions', user: 'user', users: 'users', item: 'movie', items: 'movies' }, stats: {
        rawRows: 1, droppedEmptyUser: 0, droppedCancelled: 0, droppedQuantity: 0, droppedRating: 0, droppedItem: 0, keptRows: 1, baskets: 1,
        trainBaskets: 1, fitBaskets: 1, validBaskets: 0, validFrom: 'x', testPeriodBaskets: 1, testBaskets: 1, testColdUsers: 0, cutoff: 'x', firstDay: 'x', lastDay: 'x' } },
      baselines: { 'most-popular': { ...m, hr: 0.05 }, ease: { ...m, hr: 0.18 } },
      tuning: { ease: { chosen: 50, validHr: { 10: 0.1, 50: 0.2 } } },
      train: { backend: 'hybrid', workers: 2, tfjs: 'tfjs', epochs: [epoch(1), epoch(2)], final: m, trainSeconds: 4, bytesSent: 1, showcase: [], lr: 0.01, towerScale: 0.5,
        selection: { lr: 0.01, epochs: 2, towerScale: 0.5, runs: [{ lr: 0.01, validHr: [0.1, 0.2], losses: [5, 4.5], towerHr: [{ scale: 1, hr: 0.2 }, { scale: 0.5, hr: 0.25 }], seconds: 1 }] } },
    });
    const md = readFileSync(path, 'utf8');
    assert.match(md, /\| \*\*model\*\* \(hybrid, 2 workers, 2 epochs, lr 0\.01\) \| 20\.00% \[15\.00%, 25\.00%\] \| 0\.1000 \[0\.0800, 0\.1200\] \| 0\.0900 \[0\.0700, 0\.1100\] \| 1\.111x \|/);
    assert.match(md, /Session completion: for every test session with at least 2 catalog movies, one movie is hidden/);
    assert.match(md, /Best reference: ease\. The model's HR@10 is 1\.111x it; the lower end of the model's interval is not above ease's HR@10/);
    assert.match(md, /- ease: lambda 50; 10: 10\.00%, 50: 20\.00%/);
    assert.match(md, /lr 0\.01: 10\.00%, 20\.00% \(towers 20\.00% \/ 25\.00%\)\. Chosen: lr 0\.01, 2 epochs, tower weight 0\.5/);
    assert.not.match(md, /invoice|customer|basket/i);
    assert.match(md, /\| user_embedding \| 1000 \| 50 \| 5\.00% \|/);
    assert.match(md, /Pulled 50 rows per step: 6\.4 KiB pulled \+ 6\.4 KiB pushed/);
    for (const f of ['loss.png', 'hr10.png', 'hr10-bars.png', 'samples-per-sec.png', 'results.json']) assert.ok(existsSync(join(dir, f)), f);
    for (const f of ['loss.png', 'hr10.png', 'hr10-bars.png', 'samples-per-sec.png']) {
      const png = readFileSync(join(dir, f));
      assert.equal(Array.from(png.subarray(0, 8)), [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a], `${f} is a PNG`);
      // Rendered at 2x: the 420-pixel-wide HR@10 plot plus its axes and legend is wider than 840 pixels.
      if (f === 'hr10.png') assert.ok(png.readUInt32BE(16) > 840, `hr10.png width ${png.readUInt32BE(16)}`);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('bootstrap intervals: percentile bounds around the mean, exact for constant values', () => {
  const ones = new Float64Array(50).fill(1);
  assert.equal(bootstrapCi([ones]), [[1, 1]]);
  const half = Float64Array.from({ length: 400 }, (_, i) => i % 2);
  const [[lo, hi]] = bootstrapCi([half]) as [[number, number]];
  // Binomial: sd of the mean = 0.5 / sqrt(400) = 0.025, so the 95 % interval is about 0.5 +- 0.049.
  assert.ok(lo > 0.43 && lo < 0.47 && hi > 0.53 && hi < 0.57, `${lo} ${hi}`);
});

// EASE and item-kNN on the hand-made log above (items 1 and 2 always together).
test('EASE: the tfjs block inverse equals the float64 one; weights recover the co-bought item', async () => {
  const rt = await setupTfjs({ backend: 'wasm' });
  const n = 300;
  const r = Float64Array.from({ length: n * n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) { let s = 0; for (let k = 0; k < n; k++) s += r[i * n + k]! * r[j * n + k]!; a[i * n + j] = s + (i === j ? 3 : 0); }
  const ref = spdInverse(Float64Array.from(a), n);
  const got = await spdInverseTf(rt.tf, a, n, 64);
  let err = 0, max = 0;
  for (let i = 0; i < ref.length; i++) { err = Math.max(err, Math.abs(ref[i]! - got[i]!)); max = Math.max(max, Math.abs(ref[i]!)); }
  assert.ok(err < 1e-3 * max, `max error ${err} of ${max}`);
  // (G + lambda I) P = I on the basket log; B = -P / diag(P) off the diagonal, 0 on it.
  const g = gramMatrix(train, 7);
  assert.is(g[1 * 7 + 2], 2);
  assert.is(g[0 * 7 + 0], 4);
  const p = await easeInverse(g, 7, 0.5);
  for (let i = 0; i < 7; i++) for (let j = 0; j < 7; j++) {
    let s = 0;
    for (let k = 0; k < 7; k++) s += (g[i * 7 + k]! + (i === k ? 0.5 : 0)) * p[k * 7 + j]!;
    assert.ok(Math.abs(s - (i === j ? 1 : 0)) < 1e-5, `(G + lambda I) P at ${i},${j}: ${s}`);
  }
  const b = easeFromInverse(p, 7);
  assert.is(b[3 * 7 + 3], 0);
  const m = await evaluate(new ItemItem('ease', b, train, 7), testSet([[1]], [2], [0]), 7, 1);
  assert.is(m.hr, 1);
});

test('item-kNN: cosine C[i][j] / sqrt(c_i c_j), keeping the k nearest per row', () => {
  const g = gramMatrix(train, 7);
  const w = cosineWeights(g, 7, 0);
  assert.ok(Math.abs(w[1 * 7 + 2]! - 2 / Math.sqrt(2 * 2)) < 1e-6);
  assert.ok(Math.abs(w[0 * 7 + 3]! - 1 / Math.sqrt(4 * 2)) < 1e-6);
  assert.is(w[1 * 7 + 1], 0);
  const w1 = cosineWeights(g, 7, 1);
  assert.is(Array.from(w1.subarray(0, 7)).filter((x) => x > 0).length >= 1, true);
  assert.is(w1[1 * 7 + 0], 0); // row 1 keeps only item 2
  assert.ok(w1[1 * 7 + 2]! > 0);
});

test('the model\'s EASE features of a training example are leave-one-basket-out (Sherman-Morrison = refit without it)', () => {
  const n = 12;
  const lists = [[0, 1, 2], [1, 2, 3, 4], [0, 5, 6], [2, 3, 7, 8], [9, 10, 11, 1], [0, 2, 4, 6, 8], [1, 3, 5, 7]];
  const b = baskets(lists, lists.map((_, i) => 1 + (i % 2)));
  const g = gramMatrix(b, n);
  const lambda = 2;
  const a = Float64Array.from(g);
  for (let i = 0; i < n; i++) a[i * n + i]! += lambda;
  const p = Float32Array.from(spdInverse(Float64Array.from(a), n));
  // Example: basket 3 ([2, 3, 7, 8]) with target 3 and context [2, 7, 8]; negatives include the target and a context item.
  const ctx = [2, 7, 8], t = 3, neg = Int32Array.of(0, 7, 11, 3);
  const f = wideFeatures(b, [{ basket: 3 }], Int32Array.of(0), Int32Array.of(t), neg, historyLists(b, b, 10), ctx, Int32Array.of(0, 3), Int32Array.of(0, 0), itemItemInverse(p, Float32Array.from(g), n));
  for (const x of lists[3]!) for (const y of lists[3]!) a[x * n + y]! -= 1;
  const p2 = spdInverse(a, n);
  const loo = (j: number): number => ctx.reduce((s, v) => s + (v === j ? 0 : -p2[v * n + j]! / p2[j * n + j]!), 0);
  assert.ok(Math.abs(f.fp[2]! - loo(t)) < 1e-5, `target: ${f.fp[2]} vs ${loo(t)}`);
  for (let k = 0; k < neg.length; k++) assert.ok(Math.abs(f.fn[k * 5 + 2]! - loo(neg[k]!)) < 1e-5, `negative ${neg[k]}: ${f.fn[k * 5 + 2]} vs ${loo(neg[k]!)}`);
  // Co-occurrence counts without the basket: log(1 + sum over the context of C'[v][j]).
  const cooc = (j: number): number => Math.log1p(ctx.reduce((s, v) => s + g[v * n + j]! - (lists[3]!.includes(j) ? 1 : 0), 0));
  assert.ok(Math.abs(f.fp[4]! - cooc(t)) < 1e-6, `co-occurrence of the target: ${f.fp[4]} vs ${cooc(t)}`);
  for (let k = 0; k < neg.length; k++) assert.ok(Math.abs(f.fn[k * 5 + 4]! - cooc(neg[k]!)) < 1e-6, `co-occurrence of ${neg[k]}`);
});

test.run();
