/**
 * Rendezvous store (torchrun's TCPStore, gloo's Store): a small key-value space the ranks of one job use to
 * find each other. Values are bytes; `wait` blocks until keys exist. Implementations: `MemoryStore` for
 * in-process tests, `TcpStore` served by the launcher, and one filled from Spark's barrier allGather.
 */
export interface Store {
  set(key: string, value: Uint8Array | string): Promise<void>;
  /** Wait until `key` exists (ERR_TIMEOUT after `timeoutMs`), then return its value. */
  get(key: string, timeoutMs?: number): Promise<Uint8Array>;
  /** Wait until all `keys` exist. */
  wait(keys: readonly string[], timeoutMs?: number): Promise<void>;
  /** Atomically add `delta` to an integer counter (created at 0) and return the new value. */
  add(key: string, delta: number): Promise<number>;
  /** A view whose keys are all prefixed with `prefix/`. */
  prefixed(prefix: string): Store;
  /**
   * The clock of the host serving the store, in microseconds (its monotonic clock, the timeline's: `hostClock()`
   * there), read in one round trip: the reference the ranks' timelines align to (`estimateClockOffset`). Absent
   * where the store shares the caller's clock (in-process).
   */
  readonly clock?: () => Promise<number>;
  close?(): Promise<void>;
}

export function asBytes(v: Uint8Array | string): Uint8Array {
  return typeof v === 'string' ? new TextEncoder().encode(v) : v;
}
export function asText(v: Uint8Array): string {
  return new TextDecoder().decode(v);
}

/** Prefix view shared by every implementation. */
export class PrefixStore implements Store {
  readonly clock?: () => Promise<number>;
  constructor(
    private readonly inner: Store,
    private readonly prefix: string,
  ) {
    if (inner.clock) this.clock = () => inner.clock!();
  }
  private k(key: string) {
    return `${this.prefix}/${key}`;
  }
  set(key: string, value: Uint8Array | string) {
    return this.inner.set(this.k(key), value);
  }
  get(key: string, timeoutMs?: number) {
    return this.inner.get(this.k(key), timeoutMs);
  }
  wait(keys: readonly string[], timeoutMs?: number) {
    return this.inner.wait(
      keys.map((k) => this.k(k)),
      timeoutMs,
    );
  }
  add(key: string, delta: number) {
    return this.inner.add(this.k(key), delta);
  }
  prefixed(prefix: string): Store {
    return new PrefixStore(this, prefix);
  }
}
