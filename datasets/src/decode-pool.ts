/**
 * Where a dataset's decode tasks run: inline on the calling thread (`threads: 0`) or in a piscina pool of worker
 * threads started on first use (worker code runs from the compiled `dist/*.js`). Results come back by transfer.
 * Owned by one dataset; `close()` stops the threads.
 */
import { Piscina } from 'piscina';
import { Errors, ShoalError, isShoalError, type ShoalErrorCode } from '@shoal/core';

/**
 * A ShoalError thrown in a worker thread reaches the caller as a plain Error (structured clone keeps only the
 * message): worker entries wrap their task in `shipErrors`, which sends the code and context inside the message,
 * and `DecodePool.run` rebuilds the ShoalError, so a corrupt file is ERR_DATA naming it whichever thread read it.
 */
const SHIPPED = '\u0000shoal-error:';

export async function shipErrors<R>(task: () => Promise<R>): Promise<R> {
  try {
    return await task();
  } catch (e) {
    if (!isShoalError(e)) throw e;
    throw new Error(SHIPPED + JSON.stringify({ code: e.code, message: e.message, context: e.context }));
  }
}

function unship(e: unknown): unknown {
  const m = e instanceof Error ? e.message : undefined;
  if (!m?.startsWith(SHIPPED)) return e;
  const { code, message, context } = JSON.parse(m.slice(SHIPPED.length)) as { code: ShoalErrorCode; message: string; context: Record<string, unknown> };
  return new ShoalError(code, message, context);
}

export class DecodePool<T, R> {
  private pool: Piscina | undefined;
  private closed = false;
  private readonly inflight = new Set<Promise<unknown>>();
  constructor(
    private readonly what: string,
    private readonly threads: number,
    private readonly workerUrl: URL,
    private readonly inline: (task: T) => Promise<R>,
  ) {
    if (!Number.isInteger(threads) || threads < 0) throw Errors.invalidArg('threads', `must be a non-negative integer (got ${threads})`);
  }
  async run(task: T): Promise<R> {
    if (this.closed) throw Errors.closed(this.what);
    if (this.threads === 0) return this.inline(task);
    if (!this.pool) {
      this.pool = new Piscina({
        filename: this.workerUrl.href,
        minThreads: this.threads,
        maxThreads: this.threads,
        idleTimeout: 30_000,
      });
      // Pool-level errors (a worker dying) also reject the task that was running; nothing more to do here.
      this.pool.on('error', () => undefined);
    }
    const p = this.pool.run(task) as Promise<R>;
    this.inflight.add(p);
    try {
      return await p;
    } catch (e) {
      throw unship(e);
    } finally {
      this.inflight.delete(p);
    }
  }
  /**
   * Stop the threads. Tasks already running are let finish first (up to `graceMs`, default 30 s; piscina cannot
   * destroy a pool under a running task cleanly), their results dropped.
   */
  async close(graceMs = 30_000): Promise<void> {
    this.closed = true;
    const p = this.pool;
    this.pool = undefined;
    if (!p) return;
    if (this.inflight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        Promise.allSettled([...this.inflight]),
        new Promise((r) => (timer = setTimeout(r, graceMs))),
      ]);
      clearTimeout(timer);
    }
    await p.destroy();
  }
}
