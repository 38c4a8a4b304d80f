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

for (const backend of ['ps', 'hybrid'] as const) {
  test(`demo on the synthetic log: 2 workers, ${backend} backend, report with the model ahead of most-popular`, () => {
    const out = mkdtempSync(join(tmpdir(), `rec-demo-${backend}-`));
    try {
      const r = spawnSync(process.execPath, [main, '--config', config, '--workers', '2', '--backend', backend, '--epochs', '2',
        '--max-steps', '12', '--batch', '128', '--out', out, '--cache', join(out, 'cache')], { encoding: 'utf8', timeout: 120_000 });
      assert.is(r.status, 0, `exit ${r.status}\n${r.stdout}\n${r.stderr}`);
      assert.match(r.stdout + r.stderr, /\[rank 0\] epoch 2\/2 \[##########\] 100%/);
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
