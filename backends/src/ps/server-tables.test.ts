// Server-held tables (ServerTables) and per-key server optimizers.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ActorContext } from '@shoal/core';
import { sliceKey, validateKeySpec, type KeySpec } from './key-layout.js';
import { KVServer } from './kv-server.js';
import { ServerTables } from './server-tables.js';
import { memoryPsCluster } from './testing/memory-cluster.js';

/** Lazy Adam with per-row bias correction, in float64 with float32 storage as the server keeps it. */
class RefAdam {
  readonly m: Float32Array; readonly v: Float32Array; readonly t: Float64Array;
  constructor(readonly w: Float32Array, readonly rowSize: number, readonly lr: number) {
    this.m = new Float32Array(w.length); this.v = new Float32Array(w.length); this.t = new Float64Array(w.length / rowSize);
  }
  step(ids: readonly number[], g: Float32Array): void {
    ids.forEach((r, i) => {
      const t = ++this.t[r]!;
      const a = (this.lr * Math.sqrt(1 - 0.999 ** t)) / (1 - 0.9 ** t);
      for (let k = 0; k < this.rowSize; k++) {
        const j = r * this.rowSize + k, gi = g[i * this.rowSize + k]!;
        const m = 0.9 * this.m[j]! + 0.1 * gi, v = 0.999 * this.v[j]! + 0.001 * gi * gi;
        this.m[j] = m; this.v[j] = v;
        this.w[j]! -= (a * m) / (Math.sqrt(v) + 1e-8);
      }
    });
  }
}

const near = (got: Float32Array, want: Float32Array, what: string): void => {
  for (let i = 0; i < want.length; i++) if (Math.abs(got[i]! - want[i]!) > 1e-6) assert.unreachable(`${what}[${i}] = ${got[i]}, want ${want[i]}`);
};

test('per-key updater: a key declared with its own optimizer uses it; other keys keep the server updater', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 10_000 }); // server updater: assign
  const specs: KeySpec[] = [{ key: 'own', size: 6, updater: { type: 'add', lr: 2 } }, { key: 'plain', size: 6 }];
  await Promise.all(c.workers.map((w) => w.init(specs, [new Float32Array(6).fill(1), new Float32Array(6).fill(1)])));
  for (let round = 1; round <= 2; round++) {
    await Promise.all(c.workers.map((w) => w.push(['own', 'plain'], [new Float32Array(6).fill(w.rank + 1), new Float32Array(6).fill(w.rank + 1)])));
    const [own, plain] = await c.workers[1]!.pull(['own', 'plain']);
    assert.equal(Array.from(own!), new Array(6).fill(1 + 2 * 3 * round), `round ${round}: own = 1 + lr * sum`);
    assert.equal(Array.from(plain!), new Array(6).fill(3), `round ${round}: assign = sum of the round`);
  }
  // Two workers disagreeing on a key's optimizer is a mismatch, not a silent choice.
  const bad = await Promise.allSettled(c.workers.map((w, r) => w.init([{ key: 'x', size: 2, updater: { type: 'sgd', lr: r + 1 } }], [new Float32Array(2)])));
  assert.ok(bad.some((b) => b.status === 'rejected' && /ERR_MISMATCH|declared/.test(String(b.reason))), JSON.stringify(bad.map((b) => b.status)));
  await c.close();
});

test('key specs: per-key updaters are built-in only and need update "optimizer"', () => {
  assert.throws(() => validateKeySpec({ key: 'k', size: 1, updater: { type: 'module', ref: { module: 'x', export: 'y' } } as never }), /built-in updater/);
  assert.throws(() => validateKeySpec({ key: 'k', size: 1, update: 'assign', updater: { type: 'sgd', lr: 1 } }), /needs update: 'optimizer'/);
});

test('ServerTables: 2 workers x 2 shards, server-side lazy Adam (per-row steps) on the mean row gradient equals the reference', async () => {
  const numRows = 9, rowSize = 3, lr = 0.05;
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 10_000 });
  const init = Float32Array.from({ length: numRows * rowSize }, (_, i) => Math.sin(i));
  const tabs = c.workers.map((w) => new ServerTables(w, [{ name: 'emb', numRows, rowSize }], { updater: { type: 'adam', lr, rowStep: true } }));
  await Promise.all(tabs.map((t, r) => t.init(r === 0 ? [init] : undefined)));
  const ref = new RefAdam(init.slice(), rowSize, lr);
  // Round k: worker r touches rows (r + 2k) % 9 and 7 (repeated: summed); row 8 only in round 2.
  for (let k = 0; k < 3; k++) {
    const ids = tabs.map((_, r) => Int32Array.of((r + 2 * k) % numRows, 7, 7, ...(k === 2 && r === 1 ? [8] : [])));
    const grads = ids.map((x, r) => Float32Array.from({ length: x.length * rowSize }, (_, i) => (r + 1) * 0.1 + i * 0.01 - k * 0.03));
    // Reference: mean over workers of the summed rows.
    const sum = new Map<number, Float32Array>();
    ids.forEach((x, r) => x.forEach((id, i) => {
      const row = sum.get(id) ?? new Float32Array(rowSize);
      for (let j = 0; j < rowSize; j++) row[j]! += grads[r]![i * rowSize + j]! / 2;
      sum.set(id, row);
    }));
    const order = [...sum.keys()].sort((a, b) => a - b);
    const packed = new Float32Array(order.length * rowSize);
    order.forEach((id, i) => packed.set(sum.get(id)!, i * rowSize));
    ref.step(order, packed);
    await Promise.all(tabs.map((t, r) => t.push('emb', ids[r]!, grads[r]!)));
    const pulled = await Promise.all(tabs.map((t) => t.pullAll('emb')));
    for (const p of pulled) near(p, ref.w, `round ${k} table`);
  }
  // A row pull returns exactly the rows asked for, in that order.
  const some = await tabs[1]!.pull('emb', Int32Array.of(8, 0, 7));
  near(some, Float32Array.from([...ref.w.subarray(24, 27), ...ref.w.subarray(0, 3), ...ref.w.subarray(21, 24)]), 'rows 8, 0, 7');
  await c.close();
});

test('a restarted server keeps a key\'s own optimizer and its per-row state (checkpoint)', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'ps-tables-'));
  try {
    const o = { serverIndex: 0, numServers: 1, numWorkers: 1, mode: 'sync' as const, checkpointPath: join(dir, 's.ckpt'), timeoutMs: 5000 };
    const spec: KeySpec = { key: 't:emb', size: 4 * 2, rows: { numRows: 4, rowSize: 2 }, updater: { type: 'adam', lr: 0.1, rowStep: true } };
    const init = Float32Array.of(1, 2, 3, 4, 5, 6, 7, 8);
    const ref = new RefAdam(init.slice(), 2, 0.1);
    const a = new KVServer(o);
    await a.onActorStart({ epoch: 0 } as ActorContext);
    await a.init(0, [spec], sliceKey(spec, 1), [init]);
    await a.rowSparsePush(0, spec.key, 0, Int32Array.of(1, 3), Float32Array.of(0.5, -1, 2, 0.25));
    ref.step([1, 3], Float32Array.of(0.5, -1, 2, 0.25));
    a.checkpoint();
    const b = new KVServer(o);
    await b.onActorStart({ epoch: 1 } as ActorContext);
    await b.rowSparsePush(0, spec.key, 1, Int32Array.of(0, 3), Float32Array.of(1, 1, -0.5, 0.5));
    ref.step([0, 3], Float32Array.of(1, 1, -0.5, 0.5));
    const got = (await b.rowSparsePull(0, spec.key, 2, Int32Array.of(0, 1, 2, 3))).rows as Float32Array;
    near(got, ref.w, 'after restart');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
