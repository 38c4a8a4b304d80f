import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIGITS_MAIN, maxRelDiff, runNode, SHOAL_CLI } from './train-helpers.js';

// Real processes: `shoal run` + the digits example over the net transport and the ring engine.
const dir = mkdtempSync(join(tmpdir(), 'shoal-train-mp-'));
const weights = (f: string) => Float32Array.from(JSON.parse(readFileSync(f, 'utf8')).weights as number[]);
const common = ['--optimizer', 'sgd', '--lr', '0.1', '--steps', '20', '--epochs', '1'];

test('shoal run -n 2 (ring, batch 16 each) gives the weights of 1 worker with batch 32 after 20 SGD steps', async () => {
  const one = await runNode([SHOAL_CLI, 'run', '-n', '1', DIGITS_MAIN, ...common, '--batch-size', '32', '--out', join(dir, 'w1.json')], { timeoutMs: 60_000 });
  assert.is(one.code, 0, one.stderr);
  const two = await runNode([SHOAL_CLI, 'run', '-n', '2', '--backend', 'ring', DIGITS_MAIN, ...common, '--batch-size', '16', '--out', join(dir, 'w2.json')], { timeoutMs: 60_000 });
  assert.is(two.code, 0, two.stderr);
  assert.match(two.stdout, /\[rank 0\] test accuracy: /);
  assert.match(two.stdout, /2 worker\(s\), ring engine/);
  const d = maxRelDiff(weights(join(dir, 'w2.json')), weights(join(dir, 'w1.json')));
  assert.ok(d <= 1e-5, `max relative difference ${d}`);
});

test('shoal run -n 2 --backend ps --servers 2 (server actors) and --backend hybrid match 1 worker too', async () => {
  for (const backend of ['ps', 'hybrid']) {
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--backend', backend, '--servers', '2', DIGITS_MAIN, ...common, '--batch-size', '16', '--out', join(dir, `w-${backend}.json`)], { timeoutMs: 60_000 });
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(`2 worker\\(s\\), ${backend} engine`));
    const d = maxRelDiff(weights(join(dir, `w-${backend}.json`)), weights(join(dir, 'w1.json')));
    assert.ok(d <= 1e-5, `${backend}: max relative difference ${d}`);
  }
});

test('shoal run --backend ps --ps-mode async --staleness 0 trains like 1 worker with batch 32 (SGD, within rounding)', async () => {
  const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--backend', 'ps', '--ps-mode', 'async', '--staleness', '0', DIGITS_MAIN, ...common, '--batch-size', '16', '--out', join(dir, 'w-async.json')], { timeoutMs: 60_000 });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /2 worker\(s\), ps \(async\) engine/);
  const d = maxRelDiff(weights(join(dir, 'w-async.json')), weights(join(dir, 'w1.json')));
  assert.ok(d <= 1e-4, `async: max relative difference ${d}`);
});

test('the nng and shm transports give the same weights', async () => {
  for (const t of ['nng', 'shm']) {
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--transport', t, DIGITS_MAIN, ...common, '--batch-size', '16', '--out', join(dir, `w-${t}.json`)], { timeoutMs: 60_000 });
    assert.is(r.code, 0, r.stderr);
    const d = maxRelDiff(weights(join(dir, `w-${t}.json`)), weights(join(dir, 'w1.json')));
    assert.ok(d <= 1e-5, `${t}: max relative difference ${d}`);
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
