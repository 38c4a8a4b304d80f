/**
 * The small task the Trainer's own tests share: a 2-input binary problem (y = 1 when x0 + x1 > 0), a tiny seeded
 * MLP for it, an output sink that collects what the Trainer prints, in-process ring ranks, and an async `rejects`.
 */
import * as assert from 'uvu/assert';
import { RingSync, type GradientSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import type { TfjsRuntime } from '../tfjs/runtime.js';

type Tf = TfjsRuntime['tf'];

/** `n` seeded samples of y = 1 when x0 + x1 > 0: learnable by a tiny MLP. */
export function toyData(tf: Tf, n: number, seed = 1) {
  const x = tf.randomUniform([n, 2], -1, 1, 'float32', seed);
  const y = tf.tidy(() => tf.cast(tf.greater(x.sum(1, true), 0), 'float32'));
  return { x, y };
}

/** A model factory (2 -> 8 tanh -> 1 sigmoid) with seeded initial weights. */
export const toyModel = (seed = 3) => (t: Tf) =>
  t.sequential({
    layers: [
      t.layers.dense({ inputShape: [2], units: 8, activation: 'tanh', kernelInitializer: t.initializers.glorotUniform({ seed }) }),
      t.layers.dense({ units: 1, activation: 'sigmoid', kernelInitializer: t.initializers.glorotUniform({ seed: seed + 1 }) }),
    ],
  });

/** An output sink for the Trainer's `output` option that keeps what was written. */
export const outputCollector = () => {
  const lines: string[] = [];
  return { sink: { write: (s: string) => void lines.push(s), isTTY: false }, text: () => lines.join('') };
};

/** uvu has no async `rejects`: await `fn` and match its error message. */
export async function rejects(fn: () => unknown, re: RegExp): Promise<void> {
  try {
    await fn();
  } catch (e) {
    assert.match(String((e as Error)?.message ?? e), re);
    return;
  }
  assert.unreachable(`expected a rejection matching ${re}`);
}

/** Run `fn` on `n` in-process ranks of the ring engine (memory transport), closing them after. */
export async function onRingRanks<T>(n: number, fn: (sync: GradientSync) => Promise<T>): Promise<T[]> {
  const syncs = (await memoryGroups(n, { timeoutMs: 20_000 })).map((g) => new RingSync(g));
  try {
    return await Promise.all(syncs.map(fn));
  } finally {
    await Promise.all(syncs.map((s) => s.close()));
  }
}
