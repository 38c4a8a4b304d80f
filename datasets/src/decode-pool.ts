/**
 * Where a dataset's decode tasks run: inline on the calling thread (`threads: 0`) or in a piscina pool of worker
 * threads started on first use (worker code runs from the compiled `dist/*.js`). Results come back by transfer.
 * Owned by one dataset; `close()` stops the threads.
 */
import { Piscina } from 'piscina';
import { Errors } from '@shoal/core';

export class DecodePool<T, R> {
  private pool: Piscina | undefined;
  private closed = false;
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
    this.pool ??= new Piscina({
      filename: this.workerUrl.href,
      minThreads: this.threads,
      maxThreads: this.threads,
      idleTimeout: 30_000,
    });
    return (await this.pool.run(task)) as R;
  }
  async close(): Promise<void> {
    this.closed = true;
    const p = this.pool;
    this.pool = undefined;
    if (p) await p.destroy();
  }
}
