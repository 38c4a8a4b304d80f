import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mixSeed } from './rng.js';
import { boundedTimeout, clampTimerMs, FNV1A_OFFSET, fnv1a32, fnv1aStep, MAX_TIMER_MS, settleAll } from './util.js';

test('settleAll: values in order; the first rejection in list order, after every promise settled', async () => {
  assert.equal(await settleAll([Promise.resolve(1), 2, new Promise<number>((r) => setTimeout(() => r(3), 5))]), [1, 2, 3]);
  let lateDone = false;
  const late = new Promise<void>((r) => setTimeout(() => ((lateDone = true), r()), 20));
  const e = await settleAll([late, Promise.reject(new Error('second')), Promise.reject(new Error('third'))]).catch((x: Error) => x);
  assert.is((e as Error).message, 'second');
  assert.ok(lateDone, 'waited for the slow one');
});

test('settleAll with undo: on failure each fulfilled value is undone (undo errors ignored), then the error', async () => {
  const undone: number[] = [];
  const e = await settleAll([Promise.resolve(1), Promise.reject(new Error('boom')), Promise.resolve(3)], (v) => {
    undone.push(v);
    if (v === 3) throw new Error('undo failed');
  }).catch((x: Error) => x);
  assert.is((e as Error).message, 'boom');
  assert.equal(undone.sort(), [1, 3]);
  const none: number[] = [];
  assert.equal(await settleAll([Promise.resolve(1)], (v) => none.push(v)), [1]);
  assert.equal(none, []);
});

test('timer limits: clampTimerMs caps, boundedTimeout gives no timer beyond the limit', async () => {
  assert.is(clampTimerMs(Infinity), MAX_TIMER_MS);
  assert.is(clampTimerMs(5), 5);
  assert.is(boundedTimeout(() => {}, Infinity), undefined);
  assert.is(boundedTimeout(() => {}, MAX_TIMER_MS + 1), undefined);
  let fired = false;
  const t = boundedTimeout(() => (fired = true), 1);
  assert.ok(t !== undefined);
  await new Promise((r) => setTimeout(r, 20));
  assert.ok(fired);
});

test('fnv1a32: the published FNV-1a 32-bit test vectors; fnv1aStep is its inner step', () => {
  assert.is(fnv1a32(''), 0x811c9dc5);
  assert.is(fnv1a32('a'), 0xe40c292c);
  assert.is(fnv1a32('foobar'), 0xbf9cf968);
  let h = FNV1A_OFFSET;
  for (const c of Buffer.from('foobar')) h = fnv1aStep(h, c);
  assert.is(h >>> 0, 0xbf9cf968);
  assert.is.not(fnv1a32('foobar', 0x2545f491), fnv1a32('foobar'));
});

test('mixSeed: the datasets shuffle seed of (seed, epoch, cycle) as before; parts change the seed', () => {
  const before = (seed: number, epoch: number, cycle: number) => (Math.imul(seed | 0, 0x9e3779b1) ^ Math.imul(epoch + 1, 0x85ebca6b) ^ Math.imul(cycle + 1, 0xc2b2ae35)) >>> 0;
  for (const [s, e, c] of [[7, 0, 0], [12345, 3, 1], [-1, 99, 7]] as const) assert.is(mixSeed(s, e, c), before(s, e, c));
  const seen = new Set([0, 1, 2, 3].map((e) => mixSeed(7, e)));
  assert.is(seen.size, 4);
  assert.is(mixSeed(7, 1), mixSeed(7, 1));
});

test.run();
