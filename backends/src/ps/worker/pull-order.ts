/**
 * MXNet's per-key ordering of a push after the pulls before it. In sync mode a server replies to a dense pull
 * from its live weights without a copy (large replies are copied into the link by its writer thread after the
 * call returned), so it must not apply this worker's next push to a key before the reply for that key has
 * arrived here: a push waits for the pulls of its keys issued before it.
 */
export class PullOrder {
  /** Dense pulls (and pushPulls) still in flight, per key: the latest one's settlement. */
  private readonly pulling = new Map<string, Promise<void>>();

  /** Keys with a pull in flight (bounded by the number of keys; empty when the worker is idle). */
  get size(): number {
    return this.pulling.size;
  }

  /** Register `done` as the pending pull of `keys` (cleared when it settles, unless a later pull replaced it). */
  track(keys: readonly string[], done: Promise<unknown>): void {
    const settled = done.then(
      () => undefined,
      () => undefined,
    );
    for (const k of keys) this.pulling.set(k, settled);
    void settled.then(() => {
      for (const k of keys) if (this.pulling.get(k) === settled) this.pulling.delete(k);
    });
  }

  /** Resolves once every pull of `keys` issued so far has settled (undefined when there is none). */
  after(keys: readonly string[]): Promise<unknown> | undefined {
    if (this.pulling.size === 0) return undefined;
    const waits = new Set<Promise<void>>();
    for (const k of keys) {
      const w = this.pulling.get(k);
      if (w) waits.add(w);
    }
    return waits.size ? Promise.all(waits) : undefined;
  }
}
