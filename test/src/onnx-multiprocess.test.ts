import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { maxRelDiff, runNode, SHOAL_CLI } from './train-helpers.js';

// ONNX training in real processes: `shoal run` + onnx-train-worker.js (the PyTorch-exported recommender) on the
// ring, ps and hybrid engines; 2 workers with batch 8 must end with the weights of 1 worker with batch 16.
const WORKER = new URL('./onnx-train-worker.js', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-mp-'));
const read = (f: string) => JSON.parse(readFileSync(f, 'utf8')) as { weights: number[]; sparseRows: number; engine: string };

test('OnnxTrainer under shoal run -n 2 on ring, ps and hybrid matches 1 worker after 20 Adam steps', async () => {
  const one = await runNode([SHOAL_CLI, 'run', '-n', '1', WORKER, '--batch-size', '16', '--out', join(dir, 'w1.json')], { timeoutMs: 120_000 });
  assert.is(one.code, 0, one.stderr + one.stdout);
  const ref = Float32Array.from(read(join(dir, 'w1.json')).weights);
  for (const backend of ['ring', 'ps', 'hybrid']) {
    const out = join(dir, `w-${backend}.json`);
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--backend', backend, '--servers', '1', WORKER, '--batch-size', '8', '--out', out], { timeoutMs: 120_000 });
    assert.is(r.code, 0, `${backend}: ${r.stderr}${r.stdout}`);
    const got = read(out);
    assert.is(got.engine, backend);
    if (backend !== 'ring') assert.ok(got.sparseRows > 0 && got.sparseRows <= 16, `${backend}: embedding rows sent row-sparse: ${got.sparseRows}`);
    const d = maxRelDiff(Float32Array.from(got.weights), ref);
    assert.ok(d <= 1e-5, `${backend}: max relative difference ${d}`);
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
