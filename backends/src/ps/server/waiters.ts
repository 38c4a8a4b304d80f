import { Errors } from '@shoal/core';

/**
 * Requests a server shard holds until some condition holds (a pull's round, a push's turn, rank 0's init values):
 * each with a readiness test, what to run then, and a timeout. Who wakes them: whoever changes what the tests
 * read calls `pump()`. The timeout message is built when it fires (`what()`), so it names the workers still
 * missing at that moment.
 */
interface Waiter {
  ready: () => boolean;
  run: () => void;
  fail: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
}

export class WaitQueue {
  private readonly list: Waiter[] = [];

  constructor(private readonly timeoutMs: number) {}

  get size(): number {
    return this.list.length;
  }

  /** Hold `run` until `ready()`; `fail` gets ERR_TIMEOUT (message `what()`) after the timeout. */
  add(ready: () => boolean, run: () => void, fail: (e: unknown) => void, what: () => string): void {
    const w: Waiter = {
      ready,
      run,
      fail,
      timer: setTimeout(() => {
        const i = this.list.indexOf(w);
        if (i >= 0) this.list.splice(i, 1);
        fail(Errors.timeout(what(), this.timeoutMs));
      }, this.timeoutMs),
    };
    this.list.push(w);
  }

  /** A promise for `ready()` (see `add`). */
  wait(ready: () => boolean, what: () => string): Promise<void> {
    return new Promise((resolve, reject) => this.add(ready, resolve, reject, what));
  }

  /** Run every waiter that became ready, in arrival order, until none is (a run may make others ready). */
  pump(): void {
    for (let progress = true; progress; ) {
      progress = false;
      for (let i = 0; i < this.list.length; i++) {
        const w = this.list[i]!;
        if (!w.ready()) continue;
        this.list.splice(i, 1);
        clearTimeout(w.timer);
        w.run();
        progress = true;
        break;
      }
    }
  }

  /** Fail every waiter with `err` (a lost worker, the server stopping). */
  failAll(err: unknown): void {
    for (const w of this.list.splice(0)) {
      clearTimeout(w.timer);
      w.fail(err);
    }
  }
}
