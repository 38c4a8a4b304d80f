import { Errors } from './errors.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from './transport/transport.js';

/** The largest delay Node's timers honour (a longer one overflows and fires at once). */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** `ms` capped at what a Node timer can wait (an infinite or huge timeout becomes the longest real one). */
export function clampTimerMs(ms: number): number {
  return Math.min(ms, MAX_TIMER_MS);
}

/** `setTimeout(fn, ms)`, or no timer at all when `ms` is infinite or beyond what a timer can wait. */
export function boundedTimeout(fn: () => void, ms: number): NodeJS.Timeout | undefined {
  return ms <= MAX_TIMER_MS ? setTimeout(fn, Math.max(0, ms)) : undefined;
}

/**
 * Wait for every promise (a failure does not stop the wait for the others: their resources, or the other
 * halves of a collective), then return the values in order, or throw the first rejection in list order. With
 * `undo`, on failure each fulfilled value is undone first (e.g. stop the actors that did start; its errors are
 * ignored).
 */
export async function settleAll<T>(promises: Iterable<T | PromiseLike<T>>, undo?: (value: T) => unknown): Promise<Awaited<T>[]> {
  const settled = await Promise.allSettled(promises);
  const bad = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (bad === undefined) return settled.map((r) => (r as PromiseFulfilledResult<Awaited<T>>).value);
  if (undo) await Promise.allSettled(settled.map(async (r) => (r.status === 'fulfilled' ? undo(r.value as T) : undefined)));
  throw bad.reason;
}

/** Whether process `pid` exists (signal 0; a process of another user, EPERM, exists too). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The FNV-1a (32-bit) offset basis: the usual starting value of `fnv1aStep`. */
export const FNV1A_OFFSET = 0x811c9dc5;

/** One FNV-1a step: fold `unit` (a byte or UTF-16 code unit) into the hash `h`. `>>> 0` the final value. */
export function fnv1aStep(h: number, unit: number): number {
  return Math.imul(h ^ unit, 0x01000193);
}

/** FNV-1a (32-bit) of a string's UTF-16 code units, from `seed` (default the offset basis): a stable hash. */
export function fnv1a32(s: string, seed: number = FNV1A_OFFSET): number {
  let h = seed;
  for (let i = 0; i < s.length; i++) h = fnv1aStep(h, s.charCodeAt(i));
  return h >>> 0;
}

/**
 * Race `p` against a timeout and an AbortSignal. `onCancel` runs if the wait is given up, so the caller can
 * withdraw whatever it queued (a pending recv, an aio).
 */
export function withDeadline<T>(
  what: string,
  p: Promise<T>,
  opts: IoOptions | undefined,
  onCancel?: (err: Error) => void,
): Promise<T> {
  const ms = opts?.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const signal = opts?.signal;
  if (signal?.aborted) {
    const err = Errors.aborted(what, signal.reason);
    onCancel?.(err);
    return Promise.reject(err);
  }
  // Node's timers overflow above 2^31-1 ms and fire after 1 ms: treat such waits as unbounded.
  const bounded = Number.isFinite(ms) && ms <= MAX_TIMER_MS;
  if (!bounded && !signal) return p;
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const finish = () => {
      done = true;
      if (timer !== undefined) clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      if (done) return;
      finish();
      const err = Errors.aborted(what, signal?.reason);
      onCancel?.(err);
      reject(err);
    };
    const timer = bounded
      ? setTimeout(() => {
          if (done) return;
          finish();
          const err = Errors.timeout(what, ms);
          onCancel?.(err);
          reject(err);
        }, ms)
      : undefined;
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        if (done) return;
        finish();
        resolve(v);
      },
      (e) => {
        if (done) return;
        finish();
        reject(e);
      },
    );
  });
}

/** A promise with its resolvers exposed. */
export interface Deferred<T> {
  promise: Promise<T>;
  resolve: (v: T) => void;
  reject: (e: unknown) => void;
}
export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
