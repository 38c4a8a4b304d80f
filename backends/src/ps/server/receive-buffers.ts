import type { FloatArray } from '@shoal/core';
import { allocFloat, type Dtype } from '../key-layout.js';

const noop = () => {};

/**
 * Dense keys: one receive buffer per worker that its pushes land in straight from the transport (the actor's
 * `recvTargets` hook), reused every round instead of a fresh buffer per message. `busy[r]` from the hand-out until
 * the push's data is merged or applied; `handed[r]` from the hand-out until `push` sees the request; `gen[r]`
 * counts hand-outs, so a late release of an earlier one is a no-op.
 */
export class ReceiveBuffers {
  private readonly rx: (FloatArray | null)[];
  private readonly busy: Uint8Array;
  private readonly handed: Uint8Array;
  private readonly gen: number[];

  constructor(numWorkers: number) {
    this.rx = new Array<FloatArray | null>(numWorkers).fill(null);
    this.busy = new Uint8Array(numWorkers);
    this.handed = new Uint8Array(numWorkers);
    this.gen = new Array<number>(numWorkers).fill(0);
  }

  /** The buffer a push of `rank` may land in (marked busy), or undefined when the last one is still in use. */
  handOut(rank: number, dtype: Dtype | undefined, length: number): Uint8Array | undefined {
    if (this.busy[rank] || this.handed[rank]) return undefined;
    const rx = (this.rx[rank] ??= allocFloat(dtype, length));
    this.busy[rank] = 1;
    this.handed[rank] = 1;
    this.gen[rank]!++;
    return new Uint8Array(rx.buffer, rx.byteOffset, rx.byteLength);
  }

  /**
   * For a push of `rank` carrying `g`: if a buffer was handed out for it, a function freeing it (idempotent), and
   * frees it now when the transport did not use it (`direct` is called when it did); otherwise a no-op. Requests of
   * one worker arrive in order on its connection, so the hand-out seen here is this request's.
   */
  release(rank: number, g: FloatArray | null, direct: () => void): () => void {
    if (!this.handed[rank]) return noop;
    this.handed[rank] = 0;
    const gen = this.gen[rank]!;
    const release = () => {
      if (this.gen[rank] === gen) this.busy[rank] = 0;
    };
    if (g && g.buffer === this.rx[rank]?.buffer) {
      direct();
      return release;
    }
    release();
    return noop;
  }
}
