/**
 * What a user does (issue #17, "a user's first hour"): in a fresh folder outside the repository, `npm init -y`,
 * `npm install` the packed @shoal/* tarballs (offline-friendly: their dependencies come from the npm cache or the
 * registry), a plain 20-line tfjs script with 7 shoal lines, `npx shoal run -n 2 train.js`: both ranks train and
 * the loss falls. The packages are packed once (`npm pack -w ...`); @shoal/core's install step builds its addons.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ROOT = new URL('../..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'shoal-user-'));
const PACKAGES = ['core', 'datasets', 'backends', 'wrappers', 'run'];

/** The user's script: plain tfjs; the shoal lines are marked. */
const TRAIN = `import * as tf from '@tensorflow/tfjs';
import { initWorker } from '@shoal/run'; // shoal
import { Trainer } from '@shoal/wrappers'; // shoal

// y = 3 x0 - 2 x1 + 1, learned by a small MLP
const x = tf.randomUniform([4096, 2], -1, 1, 'float32', 7);
const y = x.matMul(tf.tensor2d([[3], [-2]])).add(1);
const model = tf.sequential({
  layers: [tf.layers.dense({ inputShape: [2], units: 16, activation: 'relu' }), tf.layers.dense({ units: 1 })],
});

const worker = await initWorker(); // shoal
const trainer = new Trainer({ model, optimizer: 'adam', loss: 'meanSquaredError', sync: worker.sync, verbose: 0 }); // shoal
const history = await trainer.fit(x, y, { epochs: 5, batchSize: 64 }); // shoal
const losses = history.epochs.map((e) => e.loss);
console.log(\`rank \${worker.options.rank} of \${worker.options.worldSize}: loss \${losses.join(' ')}\`);
await trainer.close(); // shoal
await worker.close(); // shoal
`;

function sh(cmd: string, args: string[], cwd: string, timeoutMs: number, env: Record<string, string> = {}) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout: timeoutMs, env: { ...process.env, ...env }, maxBuffer: 64 << 20 });
  const where = `${cmd} ${args.join(' ')} (in ${cwd})`;
  assert.ok(!r.error, `${where}: ${r.error?.message}`);
  assert.is(r.status, 0, `${where} exited ${r.status ?? r.signal}:\n${(r.stdout + r.stderr).slice(-4000)}`);
  return r;
}

test('a fresh project installs the packed tarballs and runs a plain tfjs script on 2 workers', () => {
  const packs = join(dir, 'packs');
  mkdirSync(packs);
  sh('npm', ['pack', ...PACKAGES.flatMap((p) => ['-w', p]), '--pack-destination', packs], ROOT, 120_000);
  const tarballs = readdirSync(packs).filter((f) => f.endsWith('.tgz')).map((f) => join(packs, f));
  assert.is(tarballs.length, PACKAGES.length, `one tarball per package: ${tarballs.join(', ')}`);

  const project = join(dir, 'my-project');
  mkdirSync(project);
  const t0 = performance.now();
  // The README's commands ("Use it in your project"), with the tarballs of this build.
  sh('npm', ['init', '-y'], project, 60_000);
  sh('npm', ['pkg', 'set', 'type=module'], project, 60_000);
  sh('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', ...tarballs, '@tensorflow/tfjs@4.22.0'], project, 420_000, { ONNXRUNTIME_NODE_INSTALL: 'skip' });
  const installS = (performance.now() - t0) / 1000;
  // @shoal/core's install step built the addons the runtime loads (nng only where libnng-dev is installed).
  for (const a of ['kernels/build/Release/shoal_kernels.node', 'shm/build/Release/shoal_shm.node', 'shmcoll/build/Release/shoal_shmcoll.node']) {
    assert.ok(existsSync(join(project, 'node_modules/@shoal/core/native', a)), `built ${a}`);
  }
  writeFileSync(join(project, 'train.js'), TRAIN);
  assert.ok(TRAIN.split('\n').filter((l) => l.includes('// shoal')).length <= 10, 'at most 10 shoal lines');
  const run = sh('npx', ['shoal', 'run', '-n', '2', 'train.js'], project, 180_000);
  for (const rank of [0, 1]) {
    const line = run.stdout.split('\n').find((l) => l.startsWith(`[rank ${rank}] rank ${rank} of 2: loss `));
    assert.ok(line, `rank ${rank} reported:\n${run.stdout.slice(-2000)}`);
    const losses = line!.split('loss ')[1]!.trim().split(' ').map(Number);
    assert.is(losses.length, 5);
    assert.ok(losses.every(Number.isFinite) && losses[4]! < losses[0]! * 0.8, `loss fell on rank ${rank}: ${losses.join(' -> ')}`);
  }
  console.log(`[user-project] npm init + install ${installS.toFixed(1)} s; 2-worker run ok`);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
