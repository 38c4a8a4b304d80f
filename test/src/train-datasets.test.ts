import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tableFromArrays, tableToIPC } from 'apache-arrow';
import { RingSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { openArrowFile, shard } from '@shoal/datasets';
import { agreeStepsPerEpoch, datasetSource, setupTfjs, Trainer } from '@shoal/wrappers';
import { digitsTensors, maxRelDiff, mlp } from './train-helpers.js';

// Trainer fed by @shoal/datasets: digits as 5 Arrow files (partitions), sharded over 2 ranks, ring engine.
const rt = await setupTfjs({ backend: 'wasm' });
const tf = rt.tf;

test('2 ranks train from their shards of an Arrow dataset, agree on steps and end with equal weights', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-train-ds-'));
  const { x, y } = digitsTensors(tf, 1500);
  const px = x.dataSync() as Float32Array;
  const lab = y.dataSync() as Float32Array;
  const parts = [300, 300, 300, 300, 300];
  let off = 0;
  parts.forEach((n, p) => {
    const cols: Record<string, Float32Array | Int32Array> = {};
    for (let j = 0; j < 64; j++) cols[`p${j}`] = Float32Array.from({ length: n }, (_, r) => px[(off + r) * 64 + j]!);
    cols.label = Int32Array.from({ length: n }, (_, r) => lab[off + r]!);
    writeFileSync(join(dir, `part-${p}.arrow`), tableToIPC(tableFromArrays(cols), 'file'));
    off += n;
  });
  const ds = await openArrowFile(dir);
  const groups = await memoryGroups(2, { timeoutMs: 20_000 });
  const syncs = groups.map((g) => new RingSync(g));
  try {
    const features = Array.from({ length: 64 }, (_, j) => `p${j}`);
    const results = await Promise.all(
      syncs.map(async (sync) => {
        const mine = shard(ds, sync.rank, sync.size);
        const steps = await agreeStepsPerEpoch(sync, mine, 32);
        const source = datasetSource(tf, mine, { features, label: 'label', stepsPerEpoch: steps, shuffle: { seed: 3, buffer: 256 } });
        const trainer = new Trainer({ model: (t) => mlp(t, 7, 64), optimizer: (t) => t.train.adam(0.01), loss: 'sparseCategoricalCrossentropy', metrics: ['accuracy'], sync, runtime: rt, verbose: 0 });
        const h = await trainer.fit(source, { epochs: 6, batchSize: 32, stepsPerEpoch: steps });
        return { steps, h, w: trainer.weightsFlat() };
      }),
    );
    // 3 partitions (900 rows) vs 2 (600 rows): 'wrap' agrees on the larger count, 29 steps of 32.
    assert.is(results[0]!.steps, 29);
    assert.is(results[1]!.steps, 29);
    assert.ok(maxRelDiff(results[1]!.w, results[0]!.w, 1e-3) === 0, 'ranks hold identical weights');
    const last = results[0]!.h.epochs[5]!;
    assert.ok(last.accuracy! > 0.9, `train accuracy ${last.accuracy}`);
    assert.is(results[0]!.h.epochs[5]!.loss, results[1]!.h.epochs[5]!.loss, 'epoch logs are rank-averaged');
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
    await ds.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
