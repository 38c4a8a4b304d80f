import { createSharedRegion, type SharedRegion } from '@shoal/core/transport';
import { isShoalError, localHostId, type FloatArray } from '@shoal/core';
import { floatArrayClass, type KeyLayout, type KeySpec } from '../key-layout.js';
import type { SharedEntry } from '../protocol.js';
import type { ServerLinks } from './server-links.js';

export interface StagingOptions {
  rank: number;
  /** False: no data plane (every value travels in messages). */
  sharedMemory?: boolean;
  /** Host id of each server; servers on this worker's host use the data plane. */
  serverHosts?: readonly string[];
  hostId?: string;
  regionPrefix?: string;
  /** Keep region names until close, so a restarted server can map them again. */
  resendAfterRestart?: boolean;
}

/**
 * The worker side of the same-host data plane: each dense key gets a gradient and an output buffer (full-size
 * views into a shared region) that the servers on this host map. Tracks which server maps which key, which
 * buffers an operation in flight is using (others then send data in messages), and keys retired after a failed
 * operation (a server may still touch their buffers).
 */
export class StagingPlane {
  /** Each dense key's staging buffers. */
  private readonly staging = new Map<string, { grad: FloatArray; out: FloatArray }>();
  /** Per server: the keys whose slices it reads from and writes into the staging buffers. */
  private readonly sharedKeys: Set<string>[];
  /** Keys whose staging gradient (resp. output) an operation in flight is using. */
  private readonly gradBusy = new Set<string>();
  private readonly outBusy = new Set<string>();
  /** The staging regions, with what each server mapped of them (for a restarted server to map again). */
  private readonly regions: { region: SharedRegion; entries: Map<number, SharedEntry[]> }[] = [];
  /** Keys retired from the data plane (see `retire`): never attached again. */
  private readonly retired = new Set<string>();

  constructor(
    private readonly o: StagingOptions,
    private readonly layout: KeyLayout,
    private readonly links: ServerLinks,
  ) {
    this.sharedKeys = links.clients.map(() => new Set<string>());
  }

  buffers(key: string): { grad: FloatArray; out: FloatArray } | undefined {
    return this.staging.get(key);
  }

  /**
   * Whether dense keys get staging buffers every server maps: the data plane is on and every server runs on this
   * worker's host. (A server that then cannot map a region still gets those keys' values in messages.)
   */
  get everyServerLocal(): boolean {
    if (this.o.sharedMemory === false || !this.o.serverHosts) return false;
    const here = this.o.hostId ?? localHostId();
    return this.o.serverHosts.every((h) => h === here);
  }

  /**
   * Give the dense keys of `specs` that have none yet staging buffers in one new shared region, and let every
   * server on this host map it. The region's name is removed once they have (with `resendAfterRestart`: at
   * close, so a restarted server can map it again): nothing is left in /dev/shm if a process dies, and the
   * mappings live until both sides drop them. A server that cannot map it (another /dev/shm) is simply not used
   * that way.
   */
  async attach(specs: readonly KeySpec[]): Promise<void> {
    if (this.o.sharedMemory === false || !this.o.serverHosts) return;
    const here = this.o.hostId ?? localHostId();
    const local = this.o.serverHosts.map((h) => h === here);
    const fresh = [...new Map(specs.filter((sp) => !sp.rows && !this.staging.has(sp.key)).map((sp) => [sp.key, sp])).values()];
    if (!local.some(Boolean) || fresh.length === 0) return;
    const align = (n: number) => Math.ceil(n / 64) * 64;
    let bytes = 0;
    const at = fresh.map((sp) => {
      const b = align(sp.size * floatArrayClass(sp.dtype).BYTES_PER_ELEMENT);
      const grad = bytes;
      bytes += 2 * b;
      return { grad, out: grad + b };
    });
    let region: SharedRegion;
    try {
      region = createSharedRegion(`${this.o.regionPrefix ?? 'ps'}-w${this.o.rank}`, Math.max(bytes, 64));
    } catch (e) {
      // no room in /dev/shm (or no shm at all): these keys' values travel in messages
      if (isShoalError(e, 'ERR_TRANSPORT')) return;
      throw e;
    }
    const mapped = new Map<number, SharedEntry[]>();
    this.regions.push({ region, entries: mapped }); // close() removes the name if it is still there
    try {
      fresh.forEach((sp, i) => {
        const Ctor = floatArrayClass(sp.dtype);
        this.staging.set(sp.key, { grad: new Ctor(region.buffer, at[i]!.grad, sp.size), out: new Ctor(region.buffer, at[i]!.out, sp.size) });
      });
      await Promise.all(
        this.sharedKeys.map(async (keys, s) => {
          if (!local[s]) return;
          const entries: SharedEntry[] = [];
          fresh.forEach((sp, i) => {
            for (const sl of this.layout.slicesOf(sp.key)) {
              if (sl.server !== s) continue;
              const off = sl.start * floatArrayClass(sp.dtype).BYTES_PER_ELEMENT;
              entries.push({ key: sp.key, grad: at[i]!.grad + off, out: at[i]!.out + off });
            }
          });
          if (!entries.length) return;
          try {
            await this.links.call(s, 'attachShared', [this.o.rank, region.name, region.bytes, entries]);
          } catch (e) {
            if (isShoalError(e, 'ERR_REMOTE') && e.context.remoteCode === 'ERR_TRANSPORT') return; // cannot map it: messages
            throw e;
          }
          for (const e of entries) keys.add(e.key);
          mapped.set(s, entries);
        }),
      );
    } finally {
      // With resends after a restart the name stays until close(), so a restarted server can map the region
      // again (a killed worker's names: its servers remove them, and the launcher's sweep).
      if (!this.o.resendAfterRestart) region.unlink();
    }
  }

  /** Server `s` is gone (a new incarnation maps nothing yet): its keys go through messages. */
  dropped(s: number): void {
    this.sharedKeys[s]!.clear();
  }

  /** A restarted server `s`: let it map this worker's regions again. */
  async restored(s: number): Promise<void> {
    for (const { region, entries } of this.regions) {
      const e = entries.get(s);
      if (!e) continue;
      try {
        await this.links.clients[s]!.call('attachShared', [this.o.rank, region.name, region.bytes, e]);
        for (const x of e) if (!this.retired.has(x.key)) this.sharedKeys[s]!.add(x.key);
      } catch {
        // it cannot (or is gone again): those keys stay on messages for this server
      }
    }
  }

  /**
   * Which servers this operation on `keys` may run over the staging buffers: servers holding every slice of
   * theirs there, when none of the keys' staging buffers this operation needs is in use. Marks them in use.
   */
  claim(keys: readonly string[], grad: boolean, out: boolean): boolean[] | null {
    if (!this.staging.size) return null;
    if (new Set(keys).size !== keys.length) return null; // a key twice in one request: one staging buffer, two values
    for (const k of keys) {
      if (!this.staging.has(k) || (grad && this.gradBusy.has(k)) || (out && this.outBusy.has(k))) return null;
    }
    const per = this.sharedKeys.map(() => ({ any: false, all: true }));
    for (const k of keys) {
      for (const sl of this.layout.slicesOf(k)) {
        const p = per[sl.server]!;
        p.any = true;
        if (!this.sharedKeys[sl.server]!.has(k)) p.all = false;
      }
    }
    const use = per.map((p) => p.any && p.all);
    if (!use.some(Boolean)) return null;
    for (const k of keys) {
      if (grad) this.gradBusy.add(k);
      if (out) this.outBusy.add(k);
    }
    return use;
  }

  /** Run `op` with the staging buffers of `keys` claimed (`use`), releasing them after, or retiring them on failure. */
  async with<T>(keys: readonly string[], use: boolean[] | null, grad: boolean, out: boolean, op: () => Promise<T>): Promise<T> {
    if (!use) return op();
    try {
      return await op();
    } catch (e) {
      this.retire(keys);
      throw e;
    } finally {
      for (const k of keys) {
        if (grad) this.gradBusy.delete(k);
        if (out) this.outBusy.delete(k);
      }
    }
  }

  /**
   * An operation over the staging buffers of `keys` failed without a reply (a timeout, a lost server): a server
   * may still read the gradient buffer or write the output buffer later. Those keys leave the data plane for
   * good (their values travel in messages from now on), so no later operation shares the buffers with it.
   */
  private retire(keys: readonly string[]): void {
    for (const set of this.sharedKeys) for (const k of keys) set.delete(k);
    for (const k of keys) this.retired.add(k);
  }

  /** Remove the regions' names (if still there); the mappings go with the process or the buffers. */
  close(): void {
    for (const r of this.regions) r.region.unlink();
  }
}
