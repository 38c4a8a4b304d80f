// EmbeddingTables (server-held or replicated embedding tables), LocalOptimizer and the table fusion helpers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { LocalSync } from '../local/local-sync.js';
import { PsSync } from '../ps/ps-sync.js';
import { memoryPsCluster } from '../ps/testing/memory-cluster.js';
import { memoryGroups } from '../ring/memory-groups.js';
import { RingSync } from '../ring/ring-sync.js';
import type { GradientSync, RowSparseTensor } from '../api.js';
import { EmbeddingTables, type TablesState } from './embedding-tables.js';
import { fuseTables, splitTables } from './fuse-tables.js';
import { LocalOptimizer } from './local-optimizer.js';

/** Lazy Adam with per-row bias correction in float64 over float32 storage: the reference for both placements. */
function refAdam(w: Float32Array, rowSize: number, lr: number): (ids: readonly number[], g: Float32Array) => void {
  const m = new Float32Array(w.length), v = new Float32Array(w.length), t = new Float64Array(w.length / rowSize);
  return (ids, g) => ids.forEach((r, i) => {
    const tr = ++t[r]!;
    const a = (lr * Math.sqrt(1 - 0.999 ** tr)) / (1 - 0.9 ** tr);
    for (let k = 0; k < rowSize; k++) {
      const j = r * rowSize + k, gi = g[i * rowSize + k]!;
      m[j] = 0.9 * m[j]! + 0.1 * gi; v[j] = 0.999 * v[j]! + 0.001 * gi * gi;
      w[j]! -= (a * m[j]!) / (Math.sqrt(v[j]!) + 1e-8);
    }
  });
}

async function rejects(p: Promise<unknown>, re: RegExp): Promise<void> {
  const e = await p.then(() => null, (x: unknown) => x as Error);
  assert.ok(e instanceof Error && re.test(e.message), `expected an error matching ${re}, got ${e === null ? 'none' : e.message}`);
}

const near = (got: Float32Array, want: Float32Array, tol: number, what: string): void => {
  assert.is(got.length, want.length, `${what} length`);
  for (let i = 0; i < want.length; i++) if (!(Math.abs(got[i]! - want[i]!) <= tol)) assert.unreachable(`${what}[${i}] = ${got[i]}, want ${want[i]}`);
};

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
  const [a3, b3] = splitTables({ ...f, rowIds: Int32Array.of(1, 5), rows: Float32Array.of(1, 1, 9, 2, 2, 2) }, [a, b]);
  assert.equal(Array.from(a3!.rowIds), [1]);
  assert.equal(Array.from(b3!.rowIds), [2]);
  assert.equal(Array.from(b3!.rows), [2, 2, 2]);
  assert.throws(() => splitTables({ ...f, rowIds: Int32Array.of(7), rows: new Float32Array(3) }, [a, b]), /outside the fused tables/);
});

test('local optimizer: lazy row-wise Adam matches the per-row reference; dense Adam counts the key\'s steps', () => {
  const w = Float32Array.from({ length: 12 }, (_, i) => Math.sin(i)), want = Float32Array.from(w);
  const opt = new LocalOptimizer({ type: 'adam', lr: 0.05, rowStep: true });
  const ref = refAdam(want, 3, 0.05);
  const steps: Array<[number[], number[]]> = [[[0, 2], [1, 2, 3, -1, -2, -3]], [[2], [0.5, 0.5, 0.5]], [[1, 2, 3], [1, 1, 1, 2, 2, 2, -1, 0, 1]]];
  let row0 = 0;
  for (const [ids, g] of steps) {
    const grad = Float32Array.from(g);
    opt.step('t', w, grad, Int32Array.from(ids), 3);
    ref(ids, Float32Array.from(g));
    assert.equal(Array.from(grad), g, 'the gradient is read only');
    if (row0 === 0) row0 = w[0]!;
  }
  near(w, want, 1e-6, 'table');
  assert.is(w[0], row0, 'lazy: row 0 (first step only) did not move after it');
  // Dense: every element moves, the bias correction counts the key's steps (a row-wise reference with one row).
  const d = Float32Array.of(1, 2, 3), dw = Float32Array.from(d), dref = refAdam(dw, 3, 0.05);
  for (let s = 0; s < 3; s++) { opt.step('dense', d, Float32Array.of(1, -1, s)); dref([0], Float32Array.of(1, -1, s)); }
  near(d, dw, 1e-6, 'dense');
  assert.ok(opt.stateBytes('t') > 0);
  assert.throws(() => opt.step('t', w, new Float32Array(2), Int32Array.of(0), 3), /ids.length \* rowSize = 3/);
});

/** Two ranks push different row gradients for `rounds` rounds; returns every rank's tables at the end. */
async function twoRankRun(syncs: GradientSync[], placement: 'server' | 'replicated'): Promise<{ placement: string; tables: Float32Array[][] }> {
  const specs = [{ name: 'user', numRows: 5, rowSize: 2 }, { name: 'item', numRows: 4, rowSize: 3 }];
  const init = () => [Float32Array.from({ length: 10 }, (_, i) => i / 10), Float32Array.from({ length: 12 }, (_, i) => -i / 10)];
  const tables = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, specs, init(), { placement, optimizer: { type: 'adam', lr: 0.1, rowStep: true } })));
  for (let round = 0; round < 3; round++) {
    await Promise.all(tables.map(async (t, rank) => {
      const ids = [Int32Array.of(rank, 3), Int32Array.of(round % 4)];
      // Reads what the step needs (server: a pull; replicated: the local rows).
      const [u] = await t.pull(ids);
      assert.is(u!.length, 4);
      const grads: RowSparseTensor[] = specs.map((sp, k) => ({ ...sp, rowIds: ids[k]!, rows: Float32Array.from({ length: ids[k]!.length * sp.rowSize }, (_, i) => (rank + 1) * (i + 1) * (k ? -1 : 1)) }));
      await t.push(grads);
    }));
  }
  return { placement: tables[0]!.placement, tables: await Promise.all(tables.map((t) => t.pullAll())) };
}

/** The same run on one replica with the mean gradient of the two ranks. */
function expected(): Float32Array[] {
  const user = Float32Array.from({ length: 10 }, (_, i) => i / 10), item = Float32Array.from({ length: 12 }, (_, i) => -i / 10);
  const ru = refAdam(user, 2, 0.1), ri = refAdam(item, 3, 0.1);
  for (let round = 0; round < 3; round++) {
    // user rows 0 (rank 0), 1 (rank 1), 3 (both): the mean over the two ranks, rows untouched by a rank count 0.
    const g = (rank: number, i: number): number => (rank + 1) * (i + 1);
    ru([0, 1, 3], Float32Array.of(g(0, 0) / 2, g(0, 1) / 2, g(1, 0) / 2, g(1, 1) / 2, (g(0, 2) + g(1, 2)) / 2, (g(0, 3) + g(1, 3)) / 2));
    ri([round % 4], Float32Array.from({ length: 3 }, (_, i) => -(g(0, i) + g(1, i)) / 2));
  }
  return [user, item];
}

test('replicated tables over the ring: both ranks end equal, stepped by the mean row gradient', async () => {
  const groups = await memoryGroups(2, { timeoutMs: 10_000 });
  const syncs = groups.map((g) => new RingSync(g));
  try {
    const r = await twoRankRun(syncs, 'replicated');
    assert.is(r.placement, 'replicated');
    const want = expected();
    for (const rank of [0, 1]) r.tables[rank]!.forEach((t, k) => near(t, want[k]!, 1e-6, `rank ${rank} table ${k}`));
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
});

test('server-held tables (auto placement with ps): the same values as replicated, no copy on the workers', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 10_000 });
  try {
    const syncs = c.workers.map((w) => new PsSync(w));
    const r = await twoRankRun(syncs, 'server');
    assert.is(r.placement, 'server');
    const want = expected();
    for (const rank of [0, 1]) r.tables[rank]!.forEach((t, k) => near(t, want[k]!, 1e-6, `rank ${rank} table ${k}`));
  } finally {
    await c.close();
  }
});

/** Rounds [from, to) of a two-rank run on `tables` (deterministic row gradients that depend on the rows pulled). */
async function rounds(tables: EmbeddingTables[], from: number, to: number): Promise<void> {
  for (let round = from; round < to; round++) {
    await Promise.all(tables.map(async (t, rank) => {
      const ids = [Int32Array.of(rank, 3), Int32Array.of(round % 4, 3)];
      const got = await t.pull(ids);
      const grads: RowSparseTensor[] = t.specs.map((sp, k) => ({ ...sp, rowIds: ids[k]!, rows: got[k]!.map((x, i) => x * 0.5 + (rank + 1) * (i + 1) * (k ? -1 : 1)) }));
      await t.push(grads);
    }));
  }
}

const SPECS = [{ name: 'user', numRows: 5, rowSize: 2 }, { name: 'item', numRows: 4, rowSize: 3 }];
const INIT = () => [Float32Array.from({ length: 10 }, (_, i) => i / 10), Float32Array.from({ length: 12 }, (_, i) => -i / 10)];
const ADAM = { type: 'adam', lr: 0.1, rowStep: true } as const;
const sameBits = (got: Float32Array[], want: Float32Array[], what: string): void => want.forEach((w, k) => {
  for (let i = 0; i < w.length; i++) if (!Object.is(got[k]![i], w[i])) assert.unreachable(`${what}: table ${k}[${i}] = ${got[k]![i]}, uninterrupted ${w[i]}`);
});

test('server-held tables: exported after 3 rounds and restored on fresh servers (3 shards instead of 2), the next 3 rounds are bit-identical', async () => {
  const run = async (numServers: number, fn: (syncs: PsSync[]) => Promise<void>) => {
    const c = await memoryPsCluster({ numServers, numWorkers: 2, mode: 'sync', timeoutMs: 10_000 });
    try { await fn(c.workers.map((w) => new PsSync(w))); } finally { await c.close(); }
  };
  let want: Float32Array[] = [];
  await run(2, async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, INIT(), { optimizer: ADAM })));
    await rounds(t, 0, 6);
    want = await t[0]!.pullAll();
  });
  let saved: TablesState | null = null;
  await run(2, async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, INIT(), { optimizer: ADAM })));
    await rounds(t, 0, 3);
    saved = await t[0]!.exportState(); // rank 0 alone, between its push and the next
    assert.is(saved.keys.length, 1, 'one fused key');
    assert.is(saved.keys[0]!.version, 3);
    assert.equal(Object.keys(saved.keys[0]!.state).sort(), ['m', 'rowStep', 'v']);
  });
  await run(3, async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, s.rank === 0 ? INIT() : undefined, { optimizer: ADAM, restore: saved! })));
    await rounds(t, 3, 6);
    sameBits(await t[0]!.pullAll(), want, 'resumed');
    sameBits(await t[1]!.pullAll(), want, 'resumed, rank 1');
    // Without the optimizer state the same values give other bits: the state is what makes it exact.
  });
  await run(3, async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, s.rank === 0 ? saved!.keys.length ? splitSaved(saved!) : INIT() : undefined, { optimizer: ADAM })));
    await rounds(t, 3, 6);
    const got = await t[0]!.pullAll();
    assert.ok(got.some((g, k) => g.some((x, i) => x !== want[k]![i])), 'values alone do not resume exactly');
  });
});

/** The tables' values held in a fused server export (rows padded to the widest table). */
function splitSaved(s: TablesState): Float32Array[] {
  const all = s.keys[0]!.data, W = 3;
  let base = 0;
  return SPECS.map((t) => {
    const out = new Float32Array(t.numRows * t.rowSize);
    for (let r = 0; r < t.numRows; r++) out.set(all.subarray((base + r) * W, (base + r) * W + t.rowSize), r * t.rowSize);
    base += t.numRows;
    return out;
  });
}

test('replicated tables: exported after 3 rounds and restored on every rank, the next 3 rounds are bit-identical', async () => {
  const run = async (fn: (syncs: RingSync[]) => Promise<void>) => {
    const groups = await memoryGroups(2, { timeoutMs: 10_000 });
    const syncs = groups.map((g) => new RingSync(g));
    try { await fn(syncs); } finally { await Promise.all(syncs.map((s) => s.close())); }
  };
  let want: Float32Array[] = [];
  await run(async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, INIT(), { placement: 'replicated', optimizer: ADAM })));
    await rounds(t, 0, 6);
    want = await t[1]!.pullAll();
  });
  let saved: TablesState | null = null;
  await run(async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, INIT(), { placement: 'replicated', optimizer: ADAM })));
    await rounds(t, 0, 3);
    saved = await t[0]!.exportState();
    assert.equal(saved.keys.map((k) => k.version), [3, 3]);
  });
  await run(async (syncs) => {
    const t = await Promise.all(syncs.map((s) => EmbeddingTables.create(s, SPECS, undefined, { placement: 'replicated', optimizer: ADAM, restore: saved! })));
    await rounds(t, 3, 6);
    for (const rank of [0, 1]) sameBits(await t[rank]!.pullAll(), want, `resumed rank ${rank}`);
  });
  // A server export into replicated tables is refused, naming both.
  await rejects(EmbeddingTables.create(new LocalSync(), SPECS, undefined, { placement: 'replicated', optimizer: ADAM, restore: { ...saved!, placement: 'server' } }), /restore.*holds server tables, these are replicated/);
});

test('bad input: server placement without servers, wrong table sizes, a NaN gradient', async () => {
  const sync = new LocalSync();
  const specs = [{ name: 'u', numRows: 2, rowSize: 2 }];
  await rejects(EmbeddingTables.create(sync, specs, [new Float32Array(4)], { placement: 'server', optimizer: { type: 'adam', lr: 0.1 } }), /server-held tables need the ps or hybrid backend/);
  await rejects(EmbeddingTables.create(sync, specs, [new Float32Array(3)], { optimizer: { type: 'adam', lr: 0.1 } }), /initial table u.*has 3 values/);
  const t = await EmbeddingTables.create(sync, specs, [new Float32Array(4)], { optimizer: { type: 'adam', lr: 0.1 } });
  assert.is(t.placement, 'replicated');
  await rejects(t.push([{ ...specs[0]!, rowIds: Int32Array.of(1), rows: Float32Array.of(1, NaN) }]), /row gradient of u/);
  assert.equal(Array.from(t.local()![0]!), [0, 0, 0, 0], 'nothing applied');
  await t.push([{ ...specs[0]!, rowIds: Int32Array.of(1), rows: Float32Array.of(1, -1) }]);
  assert.equal(Array.from(t.local()![0]!).map((x) => Math.round(x * 1000) / 1000), [0, 0, -0.1, 0.1]);
  await sync.close();
});

test.run();
