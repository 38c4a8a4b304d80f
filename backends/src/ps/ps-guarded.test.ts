import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryNetwork, MemoryStore } from '@shoal/core';
import type { DenseTensor } from '../api.js';
import { startPsServers } from './launch-servers.js';
import { PsSync } from './ps-sync.js';

/**
 * Collectives on keys an earlier collective declared take one round trip: the signature check rides on the data
 * requests (`KVServer.guarded`). These cases pin that the checks still hold there, on every rank, and that a
 * refused collective leaves the engine exact (nothing applied, push counters back).
 */
async function group(size: number, numServers = 2): Promise<{ syncs: PsSync[]; close(): Promise<void> }> {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const servers = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers, numWorkers: size, mode: 'sync', timeoutMs: 10_000 });
  const syncs = await Promise.all(Array.from({ length: size }, (_, rank) => PsSync.connect({ rank, numWorkers: size, numServers, store, transport: network.transport(), timeoutMs: 10_000 })));
  return {
    syncs,
    async close() {
      await Promise.all(syncs.map((s) => s.close()));
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

const codes = async (syncs: PsSync[], fn: (x: PsSync, r: number) => Promise<unknown>) =>
  (await Promise.allSettled(syncs.map((x, r) => fn(x, r)))).map((r) => (r.status === 'fulfilled' ? { code: 'ok', message: '' } : { code: String((r.reason as { code?: string }).code), message: String((r.reason as Error).message) }));

/** Tensors `a` (4) and `b` (4) holding size * (rank * 100 + i + step): their mean is exact in float32. */
const tensors = (rank: number, size: number, step: number): DenseTensor[] =>
  ['a', 'b'].map((name, t) => ({ name, shape: [4], data: Float32Array.from({ length: 4 }, (_, i) => size * (rank * 100 + i + step + t)) }));

/** One allreduceMean on every rank, checked exactly. */
async function exact(syncs: PsSync[], step: number, what: string): Promise<void> {
  const size = syncs.length;
  const ts = syncs.map((x) => tensors(x.rank, size, step));
  await Promise.all(syncs.map((x, r) => x.allreduceMean(ts[r]!)));
  const mean = (i: number, t: number) => (size * (100 * ((size - 1) * size) / 2) + size * size * (i + step + t)) / size;
  ts.forEach((rank) => rank.forEach((g, t) => g.data.forEach((v, i) => assert.is(v, mean(i, t), `${what}: ${g.name}[${i}]`))));
}

for (const size of [2, 3]) {
  test(`known keys, ${size} ranks: a NaN, a shape, a name and a collective-order mismatch fail every rank alike, and the next step is exact`, async () => {
    const g = await group(size);
    try {
      const { syncs } = g;
      const last = size - 1;
      await exact(syncs, 1, 'first step (declares the keys)');
      await exact(syncs, 2, 'second step (one round trip)');
      const withNaN = (r: number) => tensors(r, size, 3).map((t) => (t.name === 'b' && r === last ? { ...t, data: Float32Array.of(0, NaN, 1, 2) } : t));
      for (const [what, want, fn] of [
        ['nan', 'ERR_NAN', (x: PsSync, r: number) => x.allreduceMean(withNaN(r))],
        ['shape', 'ERR_MISMATCH', (x: PsSync, r: number) => x.allreduceMean(tensors(r, size, 3).map((t) => (r === last ? { ...t, shape: [2, 2] } : t)))],
        ['name', 'ERR_MISMATCH', (x: PsSync, r: number) => x.allreduceMean(r === last ? tensors(r, size, 3).reverse() : tensors(r, size, 3))],
        ['order', 'ERR_MISMATCH', (x: PsSync, r: number) => (r === last ? x.barrier() : x.allreduceMean(tensors(r, size, 3)))],
        ['unknown name', 'ERR_MISMATCH', (x: PsSync, r: number) => x.allreduceMean(r === last ? [{ name: 'c', shape: [4], data: new Float32Array(4) }] : tensors(r, size, 3).slice(0, 1))],
      ] as const) {
        const t0 = performance.now();
        const res = await codes(syncs, fn);
        const ms = performance.now() - t0;
        res.forEach((c, r) => assert.is(c.code, want, `${what}: rank ${r} got ${c.code} ${c.message}`));
        if (what === 'nan') res.forEach((c) => assert.match(c.message, /"b" on rank/));
        assert.ok(ms < 2000, `${what}: every rank failed within 2 s (${ms.toFixed(0)} ms)`);
        await exact(syncs, 4, `after the ${what} case`);
      }
    } finally {
      await g.close();
    }
  });
}

test('known row-sparse key: a NaN fails every rank, the merged rows of the next step are exact', async () => {
  const size = 2;
  const g = await group(size);
  try {
    const { syncs } = g;
    const grad = (r: number, step: number, bad = false) => ({
      name: 'emb',
      numRows: 10,
      rowSize: 2,
      rowIds: Int32Array.of(r, 5 + r, 9),
      rows: Float32Array.from([1, 2, 3, 4, 5, 6], (v) => (bad && v === 3 ? NaN : v * size * step)),
    });
    for (const step of [1, 2]) {
      const got = await Promise.all(syncs.map((x, r) => x.sparseAllreduceMean(grad(r, step))));
      for (const m of got) {
        assert.equal([...m.rowIds], [0, 1, 5, 6, 9]);
        // rows 0/1 and 5/6 come from one rank each (mean v * step), row 9 from both (2 * [5, 6] * step)
        assert.equal([...m.rows], [1, 2, 1, 2, 3, 4, 3, 4, 10, 12].map((v) => v * step));
      }
    }
    const res = await codes(syncs, (x, r) => x.sparseAllreduceMean(grad(r, 3, r === 1)));
    res.forEach((c, r) => {
      assert.is(c.code, 'ERR_NAN', `rank ${r}: ${c.code} ${c.message}`);
      assert.match(c.message, /"emb" on rank 1/);
    });
    const after = await Promise.all(syncs.map((x, r) => x.sparseAllreduceMean(grad(r, 4))));
    assert.equal([...after[0]!.rows], [1, 2, 1, 2, 3, 4, 3, 4, 10, 12].map((v) => v * 4));
  } finally {
    await g.close();
  }
});

test('known keys take one request per server and collective: no separate signature gather', async () => {
  const g = await group(2, 1);
  try {
    const { syncs } = g;
    await exact(syncs, 1, 'first step');
    const before = syncs[0]!.kv.stats().calls;
    await exact(syncs, 2, 'second step');
    assert.is(syncs[0]!.kv.stats().calls - before, 1, 'one guarded request to the one server');
  } finally {
    await g.close();
  }
});

test('a dense and a row-sparse collective started together go in one request per server; each keeps its own outcome', async () => {
  const size = 2;
  const g = await group(size, 1);
  try {
    const { syncs } = g;
    const grad = (r: number, step: number, bad = false) => ({
      name: 'emb',
      numRows: 10,
      rowSize: 2,
      rowIds: Int32Array.of(r, 9),
      rows: Float32Array.from([1, 2, 5, 6], (v) => (bad && v === 5 ? NaN : v * size * step)),
    });
    // Both collectives issued in one turn on every rank, as the Trainer does; their results are exact.
    const both = (step: number, bad = -1) =>
      Promise.allSettled(syncs.flatMap((x, r) => [x.sparseAllreduceMean(grad(r, step, r === bad)), x.allreduceMean(tensors(r, size, step))]));
    const rowsOf = (step: number) => [1, 2, 1, 2, 10, 12].map((v) => v * step);
    for (const step of [1, 2, 3]) {
      const before = syncs[0]!.kv.stats().calls;
      const got = await both(step);
      for (let r = 0; r < size; r++) {
        const m = got[2 * r]!;
        assert.is(m.status, 'fulfilled', `step ${step} rank ${r}: ${m.status === 'rejected' ? String(m.reason) : ''}`);
        assert.equal([...(m as PromiseFulfilledResult<{ rows: Float32Array }>).value.rows], rowsOf(step));
        assert.is(got[2 * r + 1]!.status, 'fulfilled');
      }
      // From the third step both keys are known: one guardedMany request carries both collectives.
      if (step === 3) assert.is(syncs[0]!.kv.stats().calls - before, 1, 'one request to the one server for both collectives');
    }
    // A NaN in the row-sparse gradient of rank 1: that collective fails with ERR_NAN on every rank, the dense one
    // beside it in the same request completes, exactly, and the next step is exact.
    const dense = syncs.map((x) => tensors(x.rank, size, 4));
    const res = await Promise.allSettled(syncs.flatMap((x, r) => [x.sparseAllreduceMean(grad(r, 4, r === 1)), x.allreduceMean(dense[r]!)]));
    for (let r = 0; r < size; r++) {
      const s = res[2 * r]!;
      assert.is(s.status, 'rejected');
      assert.is(((s as PromiseRejectedResult).reason as { code?: string }).code, 'ERR_NAN', `rank ${r}`);
      assert.is(res[2 * r + 1]!.status, 'fulfilled', `rank ${r}: the dense collective`);
    }
    const mean = (i: number, t: number) => (size * (100 * ((size - 1) * size) / 2) + size * size * (i + 4 + t)) / size;
    dense.forEach((rank) => rank.forEach((t, k) => t.data.forEach((v, i) => assert.is(v, mean(i, k), `dense beside the NaN: ${t.name}[${i}]`))));
    const after = await both(5);
    assert.equal([...(after[0] as PromiseFulfilledResult<{ rows: Float32Array }>).value.rows], rowsOf(5));
    await exact(syncs, 6, 'after the NaN');
  } finally {
    await g.close();
  }
});

test.run();
