import { Errors } from './errors.js';
import { DEFAULT_TIMEOUT_MS, type IoOptions } from './transport/transport.js';

/** The largest delay Node's timers honour. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

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

/**
 * Queue a waiter for the next message and return its promise, bounded by `opts` (timeout, abort). A wait that
 * is given up removes itself from the queue, so it consumes nothing: the shared receive path of the transports.
 */
export function enqueueWaiter<T>(waiters: Deferred<T>[], what: string, opts: IoOptions | undefined): Promise<T> {
  const d = deferred<T>();
  waiters.push(d);
  return withDeadline(what, d.promise, opts, () => {
    const i = waiters.indexOf(d);
    if (i >= 0) waiters.splice(i, 1);
  });
}
