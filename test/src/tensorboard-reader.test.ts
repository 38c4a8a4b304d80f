/**
 * The TensorBoard callback's event files read back by TensorBoard's own reader (python/tb_tests, pytest): two
 * in-process ranks train with `tensorBoard(logdir, { updateFreq: 'batch' })`; every scalar the Trainer handed
 * the callback (rank-averaged batch and epoch logs, val_*, learning rate, samples/s) is recorded here and must
 * come back from `EventAccumulator` with the same tags, steps and float32 values; the per-rank runs hold step
 * timing and system metrics; a flipped bit fails the reader's CRC check. Parameter servers started with
 * `metrics: { logdir }` (what `shoal run --logdir` gives them) write `server-<i>` runs whose totals equal what the
 * servers did (rounds from their own stats, bytes from the key layout).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { memoryGroups, memoryPsCluster } from '@shoal/backends/testing';
import { RingSync } from '@shoal/backends';
import { sliceKey, type KeySpec } from '@shoal/backends/ps';
import { learningRateScheduler, schedules, setupTfjs, tensorBoard, Trainer, type Callbacks, type Logs } from '@shoal/wrappers';
import { runPytest } from './spark-pytest.js';
import { digitsTensors, mlp } from './train-helpers.js';

const python = process.env.SHOAL_PYTHON ?? 'python3';
const probe = spawnSync(python, ['-c', 'import tensorboard, pytest'], { encoding: 'utf8', timeout: 60_000 });
const skip = probe.error ? `${python} is not runnable` : probe.status !== 0 ? `tensorboard/pytest not importable by ${python} (pip install -r requirements.txt)` : null;

type Points = Record<string, Array<[number, number]>>;

/**
 * Two in-process servers with metrics, two workers pushing and pulling for ~2.5 s (a key split over both servers
 * and a small one on one): the totals each server's run must end with.
 */
async function serverRuns(logdir: string): Promise<Record<string, Record<string, number>>> {
  const bigKeyBound = 256;
  const specs: KeySpec[] = [
    { key: 'w', size: 1000, update: 'assign' },
    { key: 'b', size: 10, update: 'assign' },
  ];
  const c = await memoryPsCluster({ numServers: 2, numWorkers: 2, mode: 'sync', timeoutMs: 20_000, bigKeyBound, metrics: { logdir, intervalMs: 1000 } });
  let rounds = 0;
  const updates: number[] = [];
  try {
    await Promise.all(c.workers.map((w, r) => w.init(specs, r === 0 ? specs.map((s) => new Float32Array(s.size)) : undefined)));
    const t0 = Date.now();
    while (Date.now() - t0 < 2500) {
      await Promise.all(c.workers.map((w) => w.pushPull(['w', 'b'], specs.map((s) => new Float32Array(s.size).fill(1)))));
      rounds++;
      // the in-memory network completes in microtasks: let the servers' sampling timers run
      await new Promise((r) => setImmediate(r));
    }
    for (let s = 0; s < 2; s++) updates.push((await c.workers[0]!.server(s).api.stats()).updates);
  } finally {
    await c.close();
  }
  const out: Record<string, Record<string, number>> = {};
  for (let s = 0; s < 2; s++) {
    const elems = specs.flatMap((k) => sliceKey(k, 2, bigKeyBound)).filter((x) => x.server === s).reduce((a, x) => a + x.end - x.start, 0);
    const slices = specs.flatMap((k) => sliceKey(k, 2, bigKeyBound)).filter((x) => x.server === s).length;
    assert.is(updates[s], rounds * slices, `server ${s}: a round per slice per step`);
    const bytes = rounds * 2 * 4 * elems; // both workers push (and pull) the server's slices every round
    out[`server-${s}`] = { rounds_total: updates[s]!, bytes_in_total: bytes, bytes_out_total: bytes, rounds };
  }
  return out;
}

if (skip) {
  console.log(`[tensorboard-reader] SKIPPED: ${skip}`);
  test.skip('TensorBoard reads the event files', () => {});
} else {
  test('TensorBoard reads back exactly what the Trainer logged; a corrupted record fails its CRC check', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-tb-'));
    try {
      const rt = await setupTfjs({ backend: 'wasm' });
      const data = digitsTensors(rt.tf, 640);
      const val = digitsTensors(rt.tf, 800);
      const groups = await memoryGroups(2, { timeoutMs: 20_000 });
      const syncs = groups.map((g) => new RingSync(g));
      const train: Points = {};
      const valRun: Points = {};
      const add = (p: Points, tag: string, step: number, v: number) => void (p[tag] ??= []).push([step, Math.fround(v)]);
      let steps = 0;
      try {
        await Promise.all(
          syncs.map(async (sync) => {
            const t = new Trainer({ model: (tf) => mlp(tf, 7), optimizer: 'sgd', loss: 'sparseCategoricalCrossentropy', metrics: ['acc'], sync, runtime: rt, verbose: 0 });
            const recorder: Callbacks = {
              stopsOnBatch: false,
              onGlobalBatchEnd: (_s, logs: Logs) => {
                if (sync.rank !== 0) return;
                for (const [k, v] of Object.entries(logs)) add(train, `batch_${k}`, t.globalStep, v);
                add(train, 'batch_learning_rate', t.globalStep, t.learningRate);
              },
              onEpochEnd: (e, logs) => {
                if (sync.rank !== 0) return;
                for (const [k, v] of Object.entries(logs)) (k.startsWith('val_') ? add(valRun, `epoch_${k.slice(4)}`, e + 1, v) : add(train, `epoch_${k}`, e + 1, v));
                add(train, 'epoch_learning_rate', e + 1, t.learningRate);
                add(train, 'epoch_samples_per_sec', e + 1, t.lastEpoch!.samplesPerSec);
              },
            };
            await t.fit(data.x, data.y, {
              epochs: 3,
              batchSize: 16,
              validationData: { x: val.x.slice(640), y: val.y.slice(640) },
              callbacks: [learningRateScheduler(schedules.exponential({ initial: 0.3, decayRate: 0.5, decaySteps: 20 })), tensorBoard(dir, { updateFreq: 'batch', systemIntervalMs: 200 }), recorder],
            });
            steps = t.globalStep;
          }),
        );
      } finally {
        await Promise.all(syncs.map((s) => s.close()));
      }
      assert.equal(readdirSync(dir).sort(), ['rank-0', 'rank-1', 'train', 'val']);
      assert.is(train.batch_loss!.length, 60);
      const rankTags = ['batch_step_time_ms', 'batch_compute_ms', 'batch_sync_ms', 'batch_apply_ms', 'batch_bytes_sent', 'epoch_step_time_ms', 'epoch_sync_ms', 'epoch_bytes_sent', 'system/rss_mib', 'system/cpu_percent', 'system/event_loop_delay_p99_ms'];
      const servers = await serverRuns(dir);
      const expectedFile = join(dir, 'expected.json');
      writeFileSync(expectedFile, JSON.stringify({ train, val: valRun, ranks: { 'rank-0': { tags: rankTags, steps }, 'rank-1': { tags: rankTags, steps } }, servers }));
      process.env.SHOAL_TB_LOGDIR = dir;
      process.env.SHOAL_TB_EXPECTED = expectedFile;
      const r = await runPytest('tb_tests/test_tensorboard_events.py', 180_000, python);
      assert.is(r.failed, 0, 'pytest failures');
      assert.is(r.passed, 4, `expected 4 passed, got ${r.passed}`);
      assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
test.run();
