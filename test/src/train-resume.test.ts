import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DIGITS_MAIN, maxRelDiff, runNode, SHOAL_CLI } from './train-helpers.js';

// Real processes: a 2-worker job is killed mid-training, then resumed from its checkpoint folder.
const dir = mkdtempSync(join(tmpdir(), 'shoal-train-resume-'));
const weights = (f: string) => Float32Array.from(JSON.parse(readFileSync(f, 'utf8')).weights as number[]);
test('checkpoint, kill, resume (2 workers, adam) gives the weights of an uninterrupted run', async () => {
  const args = ['--epochs', '4', '--steps', '15', '--batch-size', '16'];
  const full = await runNode([SHOAL_CLI, 'run', '-n', '2', DIGITS_MAIN, ...args, '--out', join(dir, 'full.json')], { timeoutMs: 90_000 });
  assert.is(full.code, 0, full.stderr);
  const ck = join(dir, 'ckpt');
  // Rank 0 (the checkpoint writer) is SIGKILLed right after saving epoch 2: the job fails, rank 1 is stopped.
  const killed = await runNode([SHOAL_CLI, 'run', '-n', '2', '--grace-ms', '200', DIGITS_MAIN, ...args, '--checkpoint', ck, '--kill-at', '0:1'], { timeoutMs: 90_000 });
  assert.is.not(killed.code, 0);
  assert.match(killed.stderr, /rank 0 failed \(exit code 137\)[^\n]*\n  killed by SIGKILL/);
  assert.ok(existsSync(join(ck, 'latest')), 'a checkpoint was written before the failure');
  assert.not.ok(existsSync(join(dir, 'resumed.json')));
  const resumed = await runNode([SHOAL_CLI, 'run', '-n', '2', DIGITS_MAIN, ...args, '--checkpoint', ck, '--out', join(dir, 'resumed.json')], { timeoutMs: 90_000 });
  assert.is(resumed.code, 0, resumed.stderr);
  assert.match(resumed.stdout, /\[rank 0\] resumed from .* at epoch 2 \(step 30\)/);
  const d = maxRelDiff(weights(join(dir, 'resumed.json')), weights(join(dir, 'full.json')));
  assert.ok(d <= 1e-6, `max relative difference ${d}`);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
