import type { ShoalError } from '../errors.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import type { IoOptions } from './transport.js';

/**
 * The receive side every transport shares: whole messages that arrived before anyone asked for them, the
 * `recv`s waiting for the next one (served in order), and the fail-all step when the connection ends. A wait
 * that is given up (timeout, abort) removes itself, so it consumes nothing. Byte accounting lets a transport
 * pause reading above a high-water mark (`queuedBytes`) and resume when `take` has drained it.
 *
 * Not thread-safe: JS thread only. One per connection.
 */
export class Inbox {
  private queue: Uint8Array[] = [];
  private head = 0;
  private bytes = 0;
  private readonly waiters: Deferred<Uint8Array>[] = [];

  /** Bytes of queued (unclaimed) messages. */
  get queuedBytes(): number {
    return this.bytes;
  }
  /** Number of queued messages. */
  get queued(): number {
    return this.queue.length - this.head;
  }
  /** Number of waiting receivers. */
  get waiting(): number {
    return this.waiters.length;
  }
  /** The oldest waiting receiver (the one the next message goes to). */
  get firstWaiter(): Deferred<Uint8Array> | undefined {
    return this.waiters[0];
  }

  /** Hand `m` to the oldest waiter, or queue it. Returns the waiter that took it, if one did. */
  deliver(m: Uint8Array): Deferred<Uint8Array> | undefined {
    const w = this.waiters.shift();
    if (w) {
      w.resolve(m);
      return w;
    }
    this.queue.push(m);
    this.bytes += m.byteLength;
    return undefined;
  }

  /** The oldest queued message, or undefined. */
  take(): Uint8Array | undefined {
    if (this.head >= this.queue.length) return undefined;
    const m = this.queue[this.head]!;
    this.queue[this.head++] = undefined as unknown as Uint8Array;
    // Compact now and then instead of an O(n) shift per message.
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head);
      this.head = 0;
    } else if (this.head === this.queue.length) {
      this.queue = [];
      this.head = 0;
    }
    this.bytes -= m.byteLength;
    return m;
  }

  /** Add a waiter without a deadline (the caller bounds it, see `wait`). */
  addWaiter(): Deferred<Uint8Array> {
    const d = deferred<Uint8Array>();
    this.waiters.push(d);
    return d;
  }

  /** Withdraw a waiter; false when it was already served or failed. */
  removeWaiter(d: Deferred<Uint8Array>): boolean {
    const i = this.waiters.indexOf(d);
    if (i < 0) return false;
    this.waiters.splice(i, 1);
    return true;
  }

  hasWaiter(d: Deferred<Uint8Array>): boolean {
    return this.waiters.includes(d);
  }

  /**
   * Wait for the next message, bounded by `opts` (timeout, abort); a wait given up withdraws itself and then
   * runs `onCancel`. Callers take a queued message first (`take`).
   */
  wait(what: string, opts: IoOptions | undefined, onCancel?: () => void): Promise<Uint8Array> {
    const d = this.addWaiter();
    return withDeadline(what, d.promise, opts, () => {
      this.removeWaiter(d);
      onCancel?.();
    });
  }

  /** Reject every waiter with `err` (the connection ended). Queued messages stay for `take`. */
  failAll(err: ShoalError): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }
}
