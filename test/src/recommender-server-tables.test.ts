import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HybridSync, LocalSync, PsSync, RingSync, startPsServers, type GradientSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { isShoalError, MemoryNetwork, MemoryStore } from '@shoal/core';
import { setupTfjs } from '@shoal/wrappers';
import { DEFAULT_SPEC, runTraining, type TrainResult } from '../../examples/recommender/dist/index.js';
import { syntheticTask } from './helpers/recommender-data.js';

// Embedding tables held on the parameter servers (issue 8): the servers run the row-wise Adam, workers pull the
// rows of each step and push their gradients.
const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;
const data = await syntheticTask(3000);
const spec = (tables: 'server' | 'replicated') => ({
  ...DEFAULT_SPEC, model: { lr: 0.01 }, epochs: 2, train: { globalBatch: 256, targetsPerBasket: 4, seed: 1, tables }, historyMax: 100, evalEachEpoch: false, progress: false,
});

/** `n` in-process workers: hybrid (memory ring + `servers` parameter servers) or ps only. Runs `fn` on each, then closes. */
async function withWorkers<T>(n: number, servers: number, kind: 'hybrid' | 'ps', fn: (s: GradientSync) => Promise<T>): Promise<T[]> {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const sup = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: servers, numWorkers: n, mode: 'sync', timeoutMs: 30_000 });
  const ps = await Promise.all(Array.from({ length: n }, (_, rank) => PsSync.connect({ rank, numWorkers: n, numServers: servers, store, transport: network.transport(), timeoutMs: 30_000 })));
  const syncs: GradientSync[] = kind === 'ps' ? ps : (await memoryGroups(n, { timeoutMs: 30_000 })).map((g, r) => new HybridSync(new RingSync(g), ps[r]!));
  try {
    return await Promise.all(syncs.map(fn));
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
    await Promise.all(sup.map((s) => s.stop()));
  }
}

const rel = (a: number, b: number): number => Math.abs(a / b - 1);
const closeHr = (a: TrainResult, b: TrainResult): boolean => rel(a.final.hr, b.final.hr) < 0.02 || Math.abs(a.final.hr - b.final.hr) * data.test.hidden.length <= 3;

let one: TrainResult;

test('1 worker with server-held tables trains as well as replicated tables (same loss path, HR@10 within 2%)', async () => {
  const repl = await runTraining(tf, '', data, new LocalSync(), spec('replicated'));
  [one] = await withWorkers(1, 1, 'ps', (s) => runTraining(tf, '', data, s, spec('server')));
  // The servers run the same lazy Adam (per-row bias correction) as the replicated path: only float rounding differs.
  for (let e = 0; e < 2; e++) assert.ok(rel(one!.epochs[e]!.loss, repl.epochs[e]!.loss) < 1e-4, `epoch ${e + 1}: server ${one!.epochs[e]!.loss} vs replicated ${repl.epochs[e]!.loss}`);
  assert.ok(closeHr(one!, repl), `server HR@10 ${one!.final.hr} vs replicated ${repl.final.hr}`);
  assert.is(one!.epochs[0]!.tables, 'server');
});

test('2 hybrid workers (2 server shards) follow 1 worker at the same global batch; only touched rows cross the wire', async () => {
  const rs = await withWorkers(2, 2, 'hybrid', (s) => runTraining(tf, '', data, s, spec('server')));
  for (const r of rs) assert.is(r.final.hr, rs[0]!.final.hr, 'every rank pulls the same trained tables');
  for (let e = 0; e < 2; e++) assert.ok(rel(rs[0]!.epochs[e]!.loss, one.epochs[e]!.loss) < 1e-3, `epoch ${e + 1} loss ${rs[0]!.epochs[e]!.loss} vs 1 worker ${one.epochs[e]!.loss}`);
  assert.ok(closeHr(rs[0]!, one), `2 workers HR@10 ${rs[0]!.final.hr} vs 1 worker ${one.final.hr}`);
  const tableRows = data.numUsers + 2 * data.numItems;
  for (const r of rs) {
    const e = r.epochs[1]!;
    // A step pulls exactly the rows it pushes (its touched rows), a fraction of the tables.
    assert.ok(Math.abs(e.pulledRowsPerStep - e.sparseRowsPerStep) < 1e-9, `pulled ${e.pulledRowsPerStep} vs pushed ${e.sparseRowsPerStep} rows per step`);
    assert.ok(e.pulledRowsPerStep < 0.8 * tableRows, `${e.pulledRowsPerStep} of ${tableRows} rows per step`);
    assert.ok(e.heldTableBytes < 0.8 * e.tableBytes, `held ${e.heldTableBytes} of ${e.tableBytes} table bytes`);
    // Under hybrid the parameter-server client carries the tables only: its bytes per step (both directions)
    // against the touched rows' float payload (pulled + pushed).
    const payload = e.pullBytesPerStep - 4 * e.pulledRowsPerStep + e.pushBytesPerStep - 4 * e.sparseRowsPerStep;
    const ratio = e.psWireBytesPerStep / payload;
    assert.ok(ratio >= 1 && ratio <= 1.1, `wire ${e.psWireBytesPerStep} B per step vs payload ${payload} B (${ratio.toFixed(3)}x)`);
  }
});

test('server-held tables on an engine without parameter servers: ERR_CONFIG naming the backend', async () => {
  try {
    await runTraining(tf, '', data, new LocalSync(), spec('server'));
    assert.unreachable('should throw');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_CONFIG'), String(e));
    assert.match(String((e as Error).message), /ps or hybrid/);
  }
});

test.run();
