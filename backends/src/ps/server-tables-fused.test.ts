// ServerTables with the fused layout (all tables in one row-sparse key): same values as one key per table.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { ServerTables, type ServerTableSpec } from './server-tables.js';
import { memoryPsCluster } from './testing/memory-cluster.js';

const specs: ServerTableSpec[] = [
  { name: 'user', numRows: 7, rowSize: 3 },
  { name: 'item', numRows: 5, rowSize: 3 },
  { name: 'out', numRows: 5, rowSize: 4 },
];

async function runRounds(fused: boolean, pushEach: boolean): Promise<{ full: Float32Array[]; some: Float32Array[]; calls: number }> {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 10_000 });
  try {
    const tabs = c.workers.map((w) => new ServerTables(w, specs, { updater: { type: 'adam', lr: 0.05, rowStep: true }, fused }));
    const init = specs.map((t, k) => Float32Array.from({ length: t.numRows * t.rowSize }, (_, i) => Math.sin(i + 10 * k)));
    await Promise.all(tabs.map((t, r) => t.init(r === 0 ? init : undefined)));
    const calls0 = c.workers[0]!.stats().calls;
    for (let k = 0; k < 3; k++) {
      await Promise.all(tabs.map(async (t, r) => {
        const parts = specs.map((s, j) => {
          // Sorted unique ids on worker 0; unsorted with a repeat on worker 1 (summed); an empty part in round 1.
          const ids = k === 1 && j === 1 ? new Int32Array(0) : r === 0 ? Int32Array.of(0, (k + j + 1) % s.numRows === 0 ? 2 : (k + j + 1) % s.numRows) : Int32Array.of(s.numRows - 1, 1, s.numRows - 1);
          const rows = Float32Array.from({ length: ids.length * s.rowSize }, (_, i) => Math.cos(i + r + 3 * j + 7 * k) * 0.1);
          return { name: s.name, ids, rows };
        });
        if (pushEach) for (const p of parts) await t.push(p.name, p.ids, p.rows);
        else await t.pushMany(parts);
      }));
    }
    const calls = c.workers[0]!.stats().calls - calls0;
    const full = await tabs[1]!.pullMany(specs.map((s) => ({ name: s.name, ids: Int32Array.from({ length: s.numRows }, (_, i) => i) })));
    const some = [await tabs[0]!.pull('out', Int32Array.of(4, 0, 4)), ...(await tabs[0]!.pullMany([{ name: 'item', ids: Int32Array.of(3, 1) }, { name: 'user', ids: new Int32Array(0) }]))];
    return { full, some, calls };
  } finally {
    await c.close();
  }
}

test('fused ServerTables: pushMany / pullMany give exactly the values of one key per table, in one request per server', async () => {
  const per = await runRounds(false, false);
  const fused = await runRounds(true, false);
  for (let k = 0; k < specs.length; k++) assert.equal(Array.from(fused.full[k]!), Array.from(per.full[k]!), `table ${specs[k]!.name}`);
  for (let k = 0; k < per.some.length; k++) assert.equal(Array.from(fused.some[k]!), Array.from(per.some[k]!), `row pull ${k}`);
  assert.equal(fused.some[0]!.length, 3 * 4);
  assert.equal(Array.from(fused.some[0]!.subarray(0, 4)), Array.from(fused.full[2]!.subarray(16, 20)), 'row 4 of out');
  assert.ok(per.full.some((t, k) => t.some((v, i) => Math.abs(v - Math.sin(i + 10 * k)) > 1e-3)), 'the rounds moved the tables');
  // 3 rounds x 2 servers for the fused pushes; 3 tables x 2 servers per round with one key per table.
  assert.equal(fused.calls, 6);
  assert.equal(per.calls, 18);
});

test('fused ServerTables: one push per table (separate rounds) still matches one key per table', async () => {
  const per = await runRounds(false, true);
  const fused = await runRounds(true, true);
  for (let k = 0; k < specs.length; k++) assert.equal(Array.from(fused.full[k]!), Array.from(per.full[k]!), `table ${specs[k]!.name}`);
});

test('fused ServerTables: bad input names the table', async () => {
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 1, mode: 'sync', timeoutMs: 10_000 });
  try {
    const t = new ServerTables(c.workers[0]!, specs, { updater: { type: 'adam', lr: 0.05 }, fused: true });
    await t.init(specs.map((s) => new Float32Array(s.numRows * s.rowSize)));
    try { await t.pullMany([{ name: 'item', ids: Int32Array.of(5) }]); assert.unreachable('no error'); } catch (e) { assert.match(String(e), /row id 5 of table item/); }
    try { await t.pushMany([{ name: 'out', ids: Int32Array.of(1), rows: new Float32Array(3) }]); assert.unreachable('no error'); } catch (e) { assert.match(String(e), /rows of table out/); }
    assert.throws(() => new ServerTables(c.workers[0]!, specs, { updater: { type: 'adam', lr: 0.05, wd: 0.1 }, fused: true }), /wd = 0/);
  } finally {
    await c.close();
  }
});

test.run();
