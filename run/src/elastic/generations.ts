import { asText, Errors, type Store } from '@shoal/core';
import type { LostWorker } from '@shoal/backends';

/**
 * Membership generations of an elastic job (`shoal run --elastic`), kept in the job's store by the launcher:
 *
 *   elastic/gen/<g>      JSON `GenerationRecord`: the members of generation g (stable worker ids; a worker's rank
 *                        is its index in `members`), who was lost and who joined since generation g-1
 *   elastic/latest       counter: the newest generation published (incremented after its record is set)
 *   elastic/ready/<id>   set by a worker started to join (`SHOAL_ELASTIC_JOIN=1`) once it is up; the launcher
 *                        then publishes a generation that adds it
 *   elastic/suspect/<id> set by a worker that timed out waiting for worker <id>; the launcher stops <id>
 *   elastic/at/<id>      counter: the newest generation worker <id> entered (its engine of older ones closed);
 *                        the launcher stops a generation's servers once no live member is still on it
 *
 * Only the launcher writes generations, so they form one sequence every worker reads alike. Each generation's
 * engine rendezvous lives under `gen-<g>/` in the job's store, so pairs of different generations never mix.
 */
export interface GenerationRecord {
  generation: number;
  members: number[];
  lost: LostWorker[];
  joined: number[];
}

export const genKey = (g: number): string => `elastic/gen/${g}`;
export const LATEST_KEY = 'elastic/latest';
export const readyKey = (workerId: number): string => `elastic/ready/${workerId}`;
/**
 * Set by a worker whose collective timed out waiting for `workerId` (JSON `{ by, generation, message }`): the
 * launcher stops that worker (it hangs: SIGSTOP, a deadlock), which turns into a loss like any other.
 */
export const suspectKey = (workerId: number): string => `elastic/suspect/${workerId}`;
/** Counter: the newest generation worker `workerId` has entered (ElasticSync adds to it on each reset). */
export const atKey = (workerId: number): string => `elastic/at/${workerId}`;
/** The store namespace of generation g's engine. */
export const genPrefix = (g: number): string => `gen-${g}`;

/** The parameter servers of generation g of an elastic ps/hybrid job (each generation has its own, sized to it). */
export const elasticServerName = (g: number) => (i: number): string => `ps-gen${g}-server-${i}`;

/**
 * What the launcher does around publishing a generation: `prepare` before its record is in the store (start the
 * generation's servers), `published` after (stop the previous generation's).
 */
export interface GenerationHooks {
  prepare?(record: GenerationRecord): Promise<void>;
  published?(record: GenerationRecord): Promise<void>;
}

/** Parse a generation record read from the store; ERR_DATA naming the key when it is malformed. */
export function parseGeneration(bytes: Uint8Array, g: number): GenerationRecord {
  let r: GenerationRecord;
  try {
    r = JSON.parse(asText(bytes)) as GenerationRecord;
  } catch (e) {
    throw Errors.data(genKey(g), `is not JSON: ${(e as Error).message}`);
  }
  if (r.generation !== g || !Array.isArray(r.members) || r.members.length === 0 || !Array.isArray(r.lost) || !Array.isArray(r.joined)) {
    throw Errors.data(genKey(g), `is not a generation record: ${asText(bytes).slice(0, 200)}`);
  }
  return r;
}

/** The newest published generation (the counter; 0 before any bump). */
export async function latestGeneration(store: Store): Promise<number> {
  return store.add(LATEST_KEY, 0);
}

/** Read generation g's record, waiting up to `timeoutMs` for it. */
export async function readGeneration(store: Store, g: number, timeoutMs: number): Promise<GenerationRecord> {
  return parseGeneration(await store.get(genKey(g), timeoutMs), g);
}

/** `rank 2 (worker 2, killed by SIGKILL)` for each lost worker. */
export function describeLost(lost: readonly LostWorker[]): string {
  return lost.map((l) => `rank ${l.rank} (worker ${l.workerId}, ${l.reason})`).join(', ');
}

/**
 * The launcher's side: the current membership and the publication of new generations. Not thread-safe across
 * launchers (one launcher owns a job's generations).
 */
export class MembershipLedger {
  private members_: number[];
  private generation_ = 0;
  private nextId: number;

  constructor(
    private readonly store: Store,
    readonly minWorkers: number,
    readonly maxWorkers: number,
    initial: number,
    private readonly hooks: GenerationHooks = {},
  ) {
    if (!(minWorkers >= 1 && minWorkers <= initial && initial <= maxWorkers)) {
      throw Errors.invalidArg('elastic', `needs 1 <= min-workers (${minWorkers}) <= workers (${initial}) <= max-workers (${maxWorkers})`);
    }
    this.members_ = Array.from({ length: initial }, (_, i) => i);
    this.nextId = initial;
  }

  get members(): readonly number[] {
    return this.members_;
  }
  get generation(): number {
    return this.generation_;
  }
  /** A fresh stable id for a worker to start. */
  newWorkerId(): number {
    return this.nextId++;
  }
  isMember(workerId: number): boolean {
    return this.members_.includes(workerId);
  }
  rankOf(workerId: number): number {
    return this.members_.indexOf(workerId);
  }

  /** Publish generation 0 (the launch's members). */
  async start(): Promise<void> {
    const record: GenerationRecord = { generation: 0, members: this.members_, lost: [], joined: [] };
    await this.hooks.prepare?.(record);
    await this.store.set(genKey(0), JSON.stringify({ generation: 0, members: this.members_, lost: [], joined: [] } satisfies GenerationRecord));
  }

  /**
   * Drop `workerId` and publish the next generation, or return the reason the job cannot go on (fewer than
   * `minWorkers` left), publishing nothing. The membership changes at once; the store write is queued behind
   * earlier ones (`flushed()`), so generations reach the store in order.
   */
  lose(workerId: number, reason: string): { record?: GenerationRecord; error?: string } {
    const rank = this.members_.indexOf(workerId);
    if (rank < 0) return {};
    const left = this.members_.filter((m) => m !== workerId);
    const lost: LostWorker = { rank, workerId, reason };
    if (left.length < this.minWorkers) {
      return { error: `rank ${rank} (worker ${workerId}) was lost (${reason}): ${left.length} worker(s) left, fewer than --min-workers ${this.minWorkers}` };
    }
    return { record: this.publish(left, [lost], []) };
  }

  /** Add `workerId` (a started joiner) in the next generation; undefined when already at `maxWorkers`. */
  admit(workerId: number): GenerationRecord | undefined {
    if (this.members_.length >= this.maxWorkers || this.members_.includes(workerId)) return undefined;
    return this.publish([...this.members_, workerId], [], [workerId]);
  }

  /** Resolves when every generation published so far is in the store (rejects with the first write error). */
  flushed(): Promise<void> {
    return this.writes;
  }

  private writes: Promise<void> = Promise.resolve();

  private publish(members: number[], lost: LostWorker[], joined: number[]): GenerationRecord {
    const g = this.generation_ + 1;
    const record: GenerationRecord = { generation: g, members, lost, joined };
    this.members_ = members;
    this.generation_ = g;
    this.writes = this.writes.then(async () => {
      await this.hooks.prepare?.(record);
      await this.store.set(genKey(g), JSON.stringify(record));
      await this.store.add(LATEST_KEY, 1);
      await this.hooks.published?.(record);
    });
    return record;
  }
}
