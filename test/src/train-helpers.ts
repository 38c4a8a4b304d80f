import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import type * as tfjs from '@tensorflow/tfjs';
import type { Tf } from '@shoal/wrappers';

/** Repo root (test/dist/.. /..). */
export const ROOT = new URL('../../', import.meta.url).pathname;
export const SHOAL_CLI = `${ROOT}run/dist/launcher/cli.js`;
export const DIGITS_MAIN = `${ROOT}examples/digits/dist/main.js`;

/** The digits set, first `n` rows: x [n,64] scaled to 0..1, y [n] labels as float32. */
export function digitsTensors(tf: Tf, n = 1797): { x: tfjs.Tensor2D; y: tfjs.Tensor1D } {
  const lines = gunzipSync(readFileSync(`${ROOT}data/digits/digits.csv.gz`)).toString('utf8').trim().split('\n').slice(0, n);
  const px = new Float32Array(lines.length * 64);
  const y = new Float32Array(lines.length);
  lines.forEach((l, i) => {
    const f = l.split(',').map(Number);
    for (let j = 0; j < 64; j++) px[i * 64 + j] = f[j]! / 16;
    y[i] = f[64]!;
  });
  return { x: tf.tensor2d(px, [lines.length, 64]), y: tf.tensor1d(y) };
}

/** A small seeded MLP (deterministic initial weights, identical for every seed-equal call). */
export function mlp(tf: Tf, seed = 7, hidden = 32): tfjs.LayersModel {
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [64], units: hidden, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed }) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });
}

/**
 * Max over elements of |a - b| / max(|b|, floor). The floor keeps weights that pass near zero (where fp32
 * rounding of a sum of per-rank means is all that differs) from dominating; 1e-3 is far below typical weights.
 */
export function maxRelDiff(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-3): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!) / Math.max(Math.abs(b[i]!), floor));
  return m;
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
  pid: number;
}

/** Run `node args...` with a hard time limit (SIGKILL), collecting output. */
export function runNode(args: string[], opts: { timeoutMs: number; env?: Record<string, string>; onSpawn?: (pid: number) => void }): Promise<RunResult> {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, args, { cwd: ROOT, env: { ...process.env, ...(opts.env ?? {}) }, stdio: ['ignore', 'pipe', 'pipe'] });
    opts.onSpawn?.(child.pid!);
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0, pid: child.pid! });
    });
  });
}

/** Whether a process id is alive (signal 0). */
export { processAlive as alive } from '@shoal/core/util';
