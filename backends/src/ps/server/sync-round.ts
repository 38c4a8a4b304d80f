import { Errors, type FloatArray } from '@shoal/core';

/** A push's acknowledgement, resolved once its round's update is applied (and durable, if so configured). */
export interface Ack {
  resolve: () => void;
  reject: (e: unknown) => void;
}

/**
 * The sync round of one key in progress: which workers pushed, their acknowledgements, and (dense keys) each
 * worker's gradient, held until the round completes (then summed in rank order) with the function that frees
 * its receive buffer.
 */
export class SyncRound {
  readonly pushed: Uint8Array;
  count = 0;
  private acks: Ack[] = [];
  readonly grads: (FloatArray | null)[];
  private readonly release: ((() => void) | null)[];
  private timer: ReturnType<typeof setTimeout> | undefined;

  constructor(private readonly numWorkers: number) {
    this.pushed = new Uint8Array(numWorkers);
    this.grads = new Array<FloatArray | null>(numWorkers).fill(null);
    this.release = new Array<(() => void) | null>(numWorkers).fill(null);
  }

  /** Worker `rank`'s push joined the round. True when that completes it. */
  join(rank: number, ack: Ack): boolean {
    this.pushed[rank] = 1;
    this.count++;
    this.acks.push(ack);
    return this.count === this.numWorkers;
  }

  /** Keep `rank`'s gradient until the round completes, with the function that frees it. */
  hold(rank: number, g: FloatArray, release: () => void): void {
    this.grads[rank] = g;
    this.release[rank] = release;
  }

  /**
   * Start the round's clock (once per round): if it has not completed `timeoutMs` after its first push, the pushes
   * waiting in it fail with ERR_TIMEOUT naming the workers that did not push (`what` names the key and server).
   */
  arm(timeoutMs: number, what: () => string): void {
    if (this.timer) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      const missing = this.missing();
      const err = Errors.timeout(`${what()}: waiting for worker${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`, timeoutMs, { waitingFor: missing });
      for (const a of this.takeAcks()) a.reject(err);
    }, timeoutMs);
  }

  /** The acknowledgements of the round (the round keeps none). */
  takeAcks(): Ack[] {
    const a = this.acks;
    this.acks = [];
    return a;
  }

  /** Free the held gradients (after the update, or when the round is abandoned). */
  dropHeld(): void {
    for (let r = 0; r < this.grads.length; r++) {
      this.grads[r] = null;
      const rel = this.release[r];
      this.release[r] = null;
      rel?.();
    }
  }

  /** Start the next round. */
  reset(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pushed.fill(0);
    this.count = 0;
  }

  /** Give up the round (a worker of it is lost): its pushes fail with `err`, held gradients are freed. */
  abandon(err: unknown): void {
    for (const a of this.takeAcks()) a.reject(err);
    this.reset();
    this.dropHeld();
  }

  /** Ranks that have not pushed in this round. */
  missing(): number[] {
    const out: number[] = [];
    for (let r = 0; r < this.pushed.length; r++) if (!this.pushed[r]) out.push(r);
    return out;
  }
}
