import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

// The demo end to end, as processes: main prepares, launches 2 workers (+ server actors for ps/hybrid), reports.
const root = new URL('../../', import.meta.url).pathname;
const main = join(root, 'examples/recommender/dist/main.js');
const config = join(root, 'examples/recommender/configs/synthetic-grocery.json');
const python = process.env.SHOAL_PYTHON ?? 'python3';
const hasTensorboard = spawnSync(python, ['-c', 'import tensorboard'], { encoding: 'utf8', timeout: 60_000 }).status === 0;

/** The scalars of one run folder as TensorBoard's own reader sees them: tag -> [[step, value], ...]. */
function readRun(dir: string): Record<string, Array<[number, number]>> {
  const py = [
    'import json, sys',
    'from tensorboard.backend.event_processing.event_accumulator import EventAccumulator',
    'acc = EventAccumulator(sys.argv[1], size_guidance={"scalars": 0}); acc.Reload()',
    'print(json.dumps({t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}))',
  ].join('\n');
  const r = spawnSync(python, ['-c', py, dir], { encoding: 'utf8', timeout: 60_000 });
  assert.is(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, Array<[number, number]>>;
}

for (const backend of ['ps', 'hybrid'] as const) {
  test(`demo on the synthetic log: 2 workers, ${backend} backend, report with the model ahead of most-popular`, () => {
    const out = mkdtempSync(join(tmpdir(), `rec-demo-${backend}-`));
    try {
      const logdir = join(out, 'tb');
      const r = spawnSync(process.execPath, [main, '--config', config, '--workers', '2', '--backend', backend, '--epochs', '2',
        '--max-steps', '12', '--batch', '128', '--out', out, '--cache', join(out, 'cache'), ...(backend === 'hybrid' ? ['--logdir', logdir] : [])], { encoding: 'utf8', timeout: 120_000 });
      assert.is(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
      // The wrappers' progress bar on rank 0: a header per epoch, then the epoch's closing line with its loss.
      assert.match(r.stdout + r.stderr, /\[rank 0\] Epoch 2\/2/);
      assert.match(r.stdout + r.stderr, /\[rank 0\] 12\/12 \[=+\] - .* - loss: \d/);
      const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
      assert.is(res.train.backend, backend);
      assert.is(res.train.workers, 2);
      assert.ok(res.train.final.hr > 1.2 * res.baselines['most-popular'].hr, `model ${res.train.final.hr} vs ${res.baselines['most-popular'].hr}`);
      assert.ok(res.train.bytesSent > 0, 'the engine moved bytes');
      // ps / hybrid: the tables live on the server actors; a step pulls and pushes only its rows.
      const last = res.train.epochs[res.train.epochs.length - 1];
      assert.is(last.tables, 'server');
      assert.ok(last.pulledRowsPerStep > 0 && last.psWireBytesPerStep > 0, JSON.stringify(last));
      const md = readFileSync(join(out, 'report.md'), 'utf8');
      assert.match(md, /## Row-sparse traffic/);
      if (backend === 'hybrid') {
        // --logdir: one TensorBoard run per training run; the final run's epoch losses are the report's.
        assert.match(md, new RegExp(`tensorboard --logdir ${logdir}`));
        if (hasTensorboard) {
          const train = readRun(join(logdir, 'run-hybrid-w2', 'final', 'train'));
          assert.equal(train.epoch_loss!.map(([s]) => s), [1, 2]);
          train.epoch_loss!.forEach(([, v], i) => assert.is(v, Math.fround(res.train.epochs[i].loss)));
          assert.equal(train.epoch_learning_rate!.map(([, v]) => v), [Math.fround(res.train.lr), Math.fround(res.train.lr)]);
          assert.ok(train.batch_loss!.length === 2 && train.batch_loss![1]![0] === 20, JSON.stringify(train.batch_loss));
          const val = readRun(join(logdir, 'run-hybrid-w2', 'final', 'val'));
          val.epoch_hr10!.forEach(([, v], i) => assert.is(v, Math.fround(res.train.epochs[i].evalHr)));
        } else console.log('[recommender-launch] tensorboard not importable: event files not read back');
      }
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });
}

test('shoal run -n 2 --backend ring worker.js [demo flags]: the worker runs standalone and rank 0 writes the report', () => {
  const out = mkdtempSync(join(tmpdir(), 'rec-shoal-run-'));
  try {
    const cli = join(root, 'run/dist/launcher/cli.js');
    const r = spawnSync(process.execPath, [cli, 'run', '-n', '2', '--backend', 'ring', join(root, 'examples/recommender/dist/worker.js'),
      '--config', config, '--epochs', '1', '--max-steps', '10', '--batch', '128', '--out', out, '--cache', join(out, 'cache')], { encoding: 'utf8', timeout: 120_000 });
    assert.is(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
    const res = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8'));
    assert.is(res.train.backend, 'ring');
    assert.is(res.train.workers, 2);
    assert.ok(res.baselines['co-occurrence'].hr > 0);
    assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /shoal run -n 2 --backend ring/);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test.run();
