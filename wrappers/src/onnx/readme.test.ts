import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { OnnxModel } from './session.js';

// Runs the "ONNX training" code block of wrappers/README.md as written (it is plain JavaScript as well as
// TypeScript), from a folder holding the MLP fixture, and checks what it claims: the loss falls, a checkpoint
// and an exported model that onnxruntime loads.
const README = new URL('../../README.md', import.meta.url).pathname;
const FIXTURE = new URL('../../fixtures/onnx/mlp.onnx', import.meta.url).pathname;

test('the README ONNX training block runs: the loss falls, it checkpoints and exports a loadable model', async () => {
  const text = readFileSync(README, 'utf8');
  const section = text.slice(text.indexOf('## ONNX training'));
  const block = /```ts\n([\s\S]*?)```/.exec(section)?.[1];
  assert.ok(block, 'the ONNX training section has a ts code block');
  const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-readme-'));
  // The script lives beside this test (so '@shoal/wrappers' resolves); it runs in `dir`.
  const script = new URL(`./.readme-block-${process.pid}.mjs`, import.meta.url).pathname;
  try {
    copyFileSync(FIXTURE, join(dir, 'mlp.onnx'));
    writeFileSync(script, block);
    const out = execFileSync(process.execPath, [script], { cwd: dir, encoding: 'utf8', timeout: 120_000, env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SHOAL_'))) });
    const losses = out.trim().split('\n')[0]!.split(' -> ').map(Number);
    assert.is(losses.length, 5, out);
    assert.ok(losses[4]! < losses[0]! * 0.9, `loss fell: ${losses.join(' -> ')}`);
    assert.match(out, /\[ 4, 5 \]/);
    assert.ok(existsSync(join(dir, 'ckpt', 'latest')), 'checkpoint written');
    const m = await OnnxModel.load(join(dir, 'mlp-trained.onnx'));
    assert.equal(m.outputNames, ['out']);
    await m.close();
  } finally {
    rmSync(script, { force: true });
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
