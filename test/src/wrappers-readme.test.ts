/**
 * Every code block of wrappers/README.md, in document order and in one folder inside the repository (so
 * `@shoal/wrappers` resolves and later blocks read what earlier ones wrote): the TypeScript blocks are type-checked
 * together with the repository's strict settings, then each is run with tsx; the shell blocks run with `shoal`
 * meaning the launcher CLI. Each block's promised outcome is checked.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, SHOAL_CLI } from './train-helpers.js';

interface Block {
  lang: string;
  code: string;
  file?: string;
}
const readme = readFileSync(join(ROOT, 'wrappers/README.md'), 'utf8');
const blocks: Block[] = [...readme.matchAll(/^```(\w*)\n([\s\S]*?)^```$/gm)].map((m, i) => {
  const code = m[2]!;
  const lang = m[1]!;
  const named = code.match(/^\/\/ file: (\S+)\n/);
  return { lang, code, ...(lang === 'ts' ? { file: named ? named[1]! : `block-${i}.ts` } : {}) };
});

function run(cmd: string, args: string[], cwd: string, env: Record<string, string> = {}, timeoutMs = 180_000): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** What each block promises, checked after it ran (by block index among the README's blocks). */
function check(b: Block, out: string, dir: string): void {
  const where = `${b.file ?? b.lang} block`;
  if (b.code.includes('new OnnxTrainer(')) {
    const losses = (out.match(/onnx losses (.*)/)?.[1] ?? '').split(' -> ').map(Number);
    assert.ok(losses.length === 5 && losses[4]! < losses[0]! * 0.9, `${where}: the loss falls: ${out}`);
    assert.match(out, /exported model output dims 4x5/, where);
    assert.ok(existsSync(join(dir, 'onnx-ckpt/latest')) && existsSync(join(dir, 'mlp-trained.onnx')), `${where}: checkpoint and export written`);
  } else if (b.file === 'train.ts') {
    const acc = Number(out.match(/val_acc (\d\.\d+)/)?.[1]);
    assert.ok(acc >= 0.8, `${where}: val_acc ${acc}\n${out}`);
    assert.ok(existsSync(join(dir, 'model/model.json')) && existsSync(join(dir, 'model/weights.bin')), `${where}: model saved`);
  } else if (b.file === 'fewer-syncs.ts') {
    const acc = Number(out.match(/syncEvery 4: acc (\d\.\d+), 512 steps/)?.[1]);
    assert.ok(acc >= 0.8, `${where}: ${out}`);
  } else if (b.lang === 'sh' && b.code.includes('--ps-mode async')) {
    assert.match(out, /syncEvery 4: acc \d\.\d+, 256 steps/, `${where}: local SGD on 2 ranks, 256 steps each`);
    assert.match(out, /2 worker\(s\), ps \(async\) engine/, where);
    const acc = Number(out.match(/\[rank 0\] val_acc (\d\.\d+)/)?.[1]);
    assert.ok(acc >= 0.8, `${where}: async val_acc ${acc}\n${out}`);
  } else if (b.lang === 'sh') {
    assert.match(out, /\[rank 0\] val_acc \d\.\d+/, where);
    assert.ok(existsSync(join(dir, 'runs/train')) && existsSync(join(dir, 'runs/rank-1')), `${where}: SHOAL_LOGDIR runs written`);
  } else if (b.code.includes('learningRateScheduler(')) {
    assert.match(out, /\d+ epochs, stopped early: (true|false), learning rate \d/, where);
    assert.ok(existsSync(join(dir, 'best/model.json')), `${where}: modelCheckpoint wrote best/`);
  } else if (b.code.includes('loadLayersModel')) {
    const [hi, lo] = (out.match(/predictions ([\d.]+) ([\d.]+)/) ?? []).slice(1).map(Number);
    assert.ok(hi! > 0.5 && lo! < 0.5, `${where}: ${out}`);
  } else if (b.code.includes('checkpoint:')) {
    assert.match(out, /resumed at epoch 1, step 64 of 64/, where);
  } else if (b.code.includes('tensorBoard(')) {
    for (const run of ['train', 'val', 'rank-0']) assert.ok(existsSync(join(dir, 'logs/run-1', run)), `${where}: ${run}`);
  } else {
    assert.unreachable(`${where}: no check for this block; add one`);
  }
}

test('wrappers/README.md: every code block type-checks and runs with the outcome it states', async () => {
  assert.ok(blocks.length >= 6, `found ${blocks.length} blocks`);
  for (const b of blocks) assert.ok(b.lang === 'ts' || b.lang === 'sh', `unexpected block language ${JSON.stringify(b.lang)}`);
  const dir = mkdtempSync(join(ROOT, '.readme-wrappers-'));
  try {
    copyFileSync(join(ROOT, 'wrappers/fixtures/onnx/mlp.onnx'), join(dir, 'mlp.onnx')); // the ONNX training block's model
    const ts = blocks.filter((b) => b.file);
    for (const b of ts) writeFileSync(join(dir, b.file!), b.code);
    writeFileSync(join(dir, 'tsconfig.json'), JSON.stringify({ extends: '../tsconfig.base.json', compilerOptions: { noEmit: true, composite: false, declaration: false, declarationMap: false }, include: ts.map((b) => b.file) }));
    const tsc = await run(process.execPath, [join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', dir], dir);
    assert.is(tsc.code, 0, `type errors:\n${tsc.out}`);
    mkdirSync(join(dir, '.bin'));
    writeFileSync(join(dir, '.bin/shoal'), `#!/bin/sh\nexec "${process.execPath}" "${SHOAL_CLI}" "$@"\n`);
    chmodSync(join(dir, '.bin/shoal'), 0o755);
    for (const b of blocks) {
      const r = b.file
        ? await run(process.execPath, ['--import', 'tsx', b.file], dir)
        : await run('bash', ['-e', '-c', b.code], dir, { PATH: `${join(dir, '.bin')}:${process.env.PATH}` });
      assert.is(r.code, 0, `${b.file ?? 'sh'} block failed:\n${r.out}`);
      check(b, r.out, dir);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
