import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import type { DenseTensor, GradientSync, RowSparseTensor } from '../api.js';
import { settleAll } from '@shoal/core/util';

/**
 * The GradientSync compliance suite (libp2p's habit: one suite per interface, run against every engine).
 * `makeGroup(size)` returns `size` connected engines, one per rank, that can run collectives concurrently in
 * this process; the suite closes them. Checks the contract of api.ts on sizes 1..4:
 *   - allreduceMean of unique per-rank integer values is exact (sizes 0, 1, 7, 1000 and a fused list);
 *   - broadcastParameters leaves rank 0's values on every rank;
 *   - allreduceScalars averages;
 *   - sparseAllreduceMean merges duplicate and disjoint row ids into sorted unique rows;
 *   - a shape / name / count mismatch raises ERR_MISMATCH on every rank (no hang), and the engine still works;
 *   - with `collectiveOrder`: a collective-order mismatch (a barrier on one rank, an allreduce on the others)
 *     raises ERR_MISMATCH on every rank within a second (issue #16; ps and ring pass it, the ring's middle rank
 *     through the breaking rank's notice; opt-in until every engine does);
 *   - a NaN on one rank raises ERR_NAN naming the tensor on every rank;
 *   - barrier returns on every rank; stats counts bytes.
 *
 * Usage: `gradientSyncCompliance('ring', (n) => makeRingSyncs(n)).run();`
 */
export function gradientSyncCompliance(name: string, makeGroup: (size: number) => Promise<GradientSync[]>, opts: { sizes?: number[]; collectiveOrder?: boolean } = {}) {
  const s = suite(`GradientSync compliance: ${name}`);
  const sizes = opts.sizes ?? [1, 2, 3, 4];

  const withGroup = async (size: number, fn: (syncs: GradientSync[]) => Promise<void>) => {
    const syncs = await makeGroup(size);
    assert.is(syncs.length, size, `makeGroup(${size}) returned ${syncs.length} engines`);
    try {
      await fn(syncs);
    } finally {
      await Promise.all(syncs.map((x) => x.close().catch(() => {})));
    }
  };
  const all = async <T>(syncs: GradientSync[], fn: (x: GradientSync, r: number) => Promise<T>): Promise<T[]> => {
    return settleAll(syncs.map((x, r) => fn(x, r)));
  };
  const codes = async (syncs: GradientSync[], fn: (x: GradientSync, r: number) => Promise<unknown>) =>
    (await Promise.allSettled(syncs.map((x, r) => fn(x, r)))).map((r) =>
      r.status === 'fulfilled' ? { code: 'ok', message: '' } : { code: String((r.reason as { code?: string }).code), message: String((r.reason as Error).message) },
    );
  const tensors = (rank: number, size: number, lens: number[]): DenseTensor[] =>
    lens.map((n, t) => ({
      name: `t${t}`,
      shape: [n],
      // unique per rank and element; multiples of `size` keep the mean exact in float32
      data: Float32Array.from({ length: n }, (_, i) => size * (rank * 1000 + i + t * 7)),
    }));

  s('allreduceMean of unique per-rank values is exact', async () => {
    for (const size of sizes) {
      const lens = [0, 1, 7, 1000, ...Array.from({ length: 40 }, (_, i) => 3 + i)];
      await withGroup(size, async (syncs) => {
        const grads = syncs.map((x) => tensors(x.rank, size, lens));
        await all(syncs, (x, r) => x.allreduceMean(grads[r]!));
        for (let r = 0; r < size; r++)
          grads[r]!.forEach((g, t) =>
            g.data.forEach((v, i) => {
              let want = 0;
              for (let q = 0; q < size; q++) want += size * (q * 1000 + i + t * 7);
              want /= size;
              if (v !== want) assert.unreachable(`size ${size} rank ${r} ${g.name}[${i}] = ${v}, want ${want}`);
            }),
          );
        const st = syncs[0]!.stats();
        if (size > 1) assert.ok(st.bytesSent > 0 && st.bytesReceived > 0, `stats ${JSON.stringify(st)}`);
      });
    }
  });

  s('broadcastParameters gives every rank the values of rank 0', async () => {
    for (const size of sizes) {
      await withGroup(size, async (syncs) => {
        const params = syncs.map((x) => tensors(x.rank, size, [5, 1, 300]));
        await all(syncs, (x, r) => x.broadcastParameters(params[r]!));
        for (let r = 0; r < size; r++) params[r]!.forEach((p, t) => assert.equal([...p.data], [...params[0]![t]!.data]));
      });
    }
  });

  s('allreduceScalars averages and barrier returns on every rank', async () => {
    for (const size of sizes) {
      await withGroup(size, async (syncs) => {
        const out = await all(syncs, (x) => x.allreduceScalars(new Float64Array([x.rank, 2 * x.rank + 1])));
        const m = (size - 1) / 2;
        for (const o of out) assert.equal([...o], [m, 2 * m + 1]);
        await all(syncs, (x) => x.barrier());
      });
    }
  });

  s('sparseAllreduceMean merges rows into sorted unique ids', async () => {
    for (const size of sizes) {
      await withGroup(size, async (syncs) => {
        if (!syncs[0]!.sparseAllreduceMean) return;
        const rowSize = 3;
        const grad = (r: number): RowSparseTensor => {
          const ids = [r + 5, 2, r + 5]; // a duplicate within a rank, one shared row, one rank-specific row
          return { name: 'emb', numRows: 100, rowSize, rowIds: Int32Array.from(ids), rows: Float32Array.from({ length: ids.length * rowSize }, (_, k) => r + 1 + k) };
        };
        const res = await all(syncs, (x, r) => x.sparseAllreduceMean!(grad(r)));
        const want = new Map<number, number[]>();
        for (let r = 0; r < size; r++) {
          const g = grad(r);
          g.rowIds.forEach((id, j) => {
            const row = want.get(id) ?? [0, 0, 0];
            for (let c = 0; c < rowSize; c++) row[c]! += g.rows[j * rowSize + c]! / size;
            want.set(id, row);
          });
        }
        const ids = [...want.keys()].sort((a, b) => a - b);
        for (const out of res) {
          assert.equal([...out.rowIds], ids);
          assert.is(out.rowSize, rowSize);
          ids.forEach((id, j) => {
            for (let c = 0; c < rowSize; c++) {
              const d = Math.abs(out.rows[j * rowSize + c]! - want.get(id)![c]!);
              if (d > 1e-5) assert.unreachable(`row ${id}[${c}] off by ${d}`);
            }
          });
        }
      });
    }
  });

  s('a shape, name or count mismatch raises ERR_MISMATCH naming the tensor on every rank, then the engine still works', async () => {
    for (const size of sizes.filter((x) => x > 1)) {
      await withGroup(size, async (syncs) => {
        const last = size - 1;
        const cases: [string, (r: number) => DenseTensor[]][] = [
          ['shape', (r) => [{ name: 'w', shape: [r === last ? 5 : 4], data: new Float32Array(r === last ? 5 : 4) }]],
          ['name', (r) => [{ name: r === last ? 'b' : 'w', shape: [4], data: new Float32Array(4) }]],
          ['count', (r) => (r === last ? [] : [{ name: 'w', shape: [4], data: new Float32Array(4) }])],
        ];
        for (const [what, mk] of cases) {
          const res = await codes(syncs, (x, r) => x.allreduceMean(mk(r)));
          res.forEach((c, r) => {
            assert.is(c.code, 'ERR_MISMATCH', `${what}: rank ${r} got ${c.code} ${c.message}`);
            assert.match(c.message, what === 'name' ? /"[wb]"/ : /"w"/, `${what}: rank ${r} message names the tensor: ${c.message}`);
          });
        }
        const ok = syncs.map((x) => [{ name: 'w', shape: [2], data: new Float32Array([x.rank * size, 0]) }]);
        await all(syncs, (x, r) => x.allreduceMean(ok[r]!));
        assert.is(ok[last]![0]!.data[0], ((size - 1) / 2) * size);
      });
    }
  });

  s('a collective-order mismatch (barrier on one rank, allreduce on the others) is ERR_MISMATCH on every rank within a second', async () => {
    if (!opts.collectiveOrder) return;
    for (const size of sizes.filter((x) => x > 1)) {
      await withGroup(size, async (syncs) => {
        const t0 = performance.now();
        const res = await codes(syncs, (x, r) => (r === size - 1 ? x.barrier() : x.allreduceMean([{ name: 'w', shape: [4], data: new Float32Array(4) }])));
        const ms = performance.now() - t0;
        res.forEach((c, r) => assert.is(c.code, 'ERR_MISMATCH', `size ${size}: rank ${r} got ${c.code} ${c.message}`));
        assert.ok(ms < 1000, `size ${size}: took ${ms.toFixed(0)} ms`);
      });
    }
  });

  s('a NaN on one rank raises ERR_NAN naming the tensor on every rank', async () => {
    for (const size of sizes) {
      await withGroup(size, async (syncs) => {
        const mk = (r: number): DenseTensor[] => [
          { name: 'ok', shape: [3], data: new Float32Array(3) },
          { name: 'bad', shape: [3], data: Float32Array.from([0, r === size - 1 ? NaN : 1, 2]) },
        ];
        const res = await codes(syncs, (x, r) => x.allreduceMean(mk(r)));
        res.forEach((c, r) => {
          assert.is(c.code, 'ERR_NAN', `rank ${r}: ${c.code} ${c.message}`);
          assert.match(c.message, /bad/);
        });
      });
    }
  });

  return s;
}
