import type { ActorSupervisor, Store } from '@shoal/core';
import { atKey, type GenerationHooks, type GenerationRecord } from './generations.js';

/** How often the launcher checks whether a generation's servers are still in use. */
const POLL_MS = 100;

export interface GenerationServersOptions {
  /** Start the parameter servers of a generation (sized to it). */
  start(record: GenerationRecord): Promise<ActorSupervisor[]>;
  /** Stop servers no worker uses any more. */
  stop(servers: ActorSupervisor[]): Promise<void>;
  /** The job's store, where each worker counts the newest generation it entered (`atKey`). */
  store: Store;
  /** Whether worker `id` is still running (a dead one uses nothing). */
  alive(workerId: number): boolean;
  log?(line: string): void;
}

/**
 * Elastic ps/hybrid (`shoal run --elastic`): each membership generation gets servers of its own, sized to it.
 * Generation g's servers stop once every live member of g has entered a later generation (ElasticSync counts it
 * under `atKey`), never earlier: after a generation that only adds workers, members keep training on g's engine
 * until their next commit, and a worker whose servers stop under it fails with ERR_PEER_CLOSED (the crash the
 * old "keep g's servers until g+2" rule worked around, and which two quick generations could still cause).
 */
export class GenerationServers implements GenerationHooks {
  private readonly held = new Map<number, { servers: ActorSupervisor[]; members: readonly number[]; watched: boolean }>();
  private closed = false;

  constructor(private readonly o: GenerationServersOptions) {}

  /** Every server started so far and not stopped (the launcher stops them with the job). */
  get servers(): ActorSupervisor[] {
    return [...this.held.values()].flatMap((h) => h.servers);
  }

  async prepare(record: GenerationRecord): Promise<void> {
    this.held.set(record.generation, { servers: await this.o.start(record), members: record.members, watched: false });
  }

  async published(record: GenerationRecord): Promise<void> {
    for (const [g, h] of this.held) {
      if (g >= record.generation || h.watched) continue;
      h.watched = true;
      void this.stopWhenLeft(g);
    }
  }

  /** Stop watching (the job ends; its servers are stopped with it). */
  close(): void {
    this.closed = true;
  }

  private async stopWhenLeft(g: number): Promise<void> {
    const h = this.held.get(g)!;
    for (;;) {
      if (this.closed) return;
      let inUse = false;
      for (const m of h.members) {
        if (!this.o.alive(m)) continue;
        const at = await this.o.store.add(atKey(m), 0).catch(() => Number.POSITIVE_INFINITY);
        if (at <= g) {
          inUse = true;
          break;
        }
      }
      if (!inUse) break;
      await new Promise((r) => setTimeout(r, POLL_MS).unref());
    }
    if (this.closed) return;
    this.held.delete(g);
    this.o.log?.(`generation ${g}'s ${h.servers.length} server(s) stop: no live worker uses them`);
    await this.o.stop(h.servers);
  }
}
