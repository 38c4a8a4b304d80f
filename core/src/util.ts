import { Errors } from './errors.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from './transport/transport.js';

/** The largest delay Node's timers honour. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** A timer for `ms`, or none when `ms` is beyond what Node's timers honour (they would fire at once). */
export function maybeTimer(ms: number, fn: () => void): NodeJS.Timeout | undefined {
  return ms <= MAX_TIMER_MS ? setTimeout(fn, Math.max(0, ms)) : undefined;
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
