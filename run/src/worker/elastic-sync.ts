import type { DenseTensor, ElasticControl, EngineCapabilities, GradientSync, LostWorker, MembershipChange, RowSparseTensor } from '@shoal/backends';
import type { Timeline } from '@shoal/core/telemetry';
import { Errors, isShoalError, type WorkerOptions } from '@shoal/core';
import { atKey, describeLost, elasticServerName, genKey, suspectKey, genPrefix, latestGeneration, parseGeneration, readGeneration, readyKey, type GenerationRecord } from '../elastic/generations.js';
import { connectEngine, type ConnectedEngine, type EngineOptions } from './engine-factory.js';
import type { JobContext } from './join-job.js';

/** Errors a lost peer causes in a collective (its connection closed, the group broken, a wait cut short). */
const LOSS_CODES = new Set(['ERR_PEER_CLOSED', 'ERR_CLOSED', 'ERR_TRANSPORT', 'ERR_STATE', 'ERR_TIMEOUT', 'ERR_ABORTED']);
/** The one-value tensor carrying the join agreement in every `allreduceMean`. */
const JOIN_FLAG = 'elastic/join';
/** How long a failed collective waits for the launcher to publish the generation that explains it. */
const LOSS_GRACE_MS = 10_000;
/** One store wait of the generation watcher; it waits again after each (the job may run for days). */
const WATCH_SLICE_MS = 10 * 60_000;

/**
 * The elastic engine of `shoal run --elastic` (Horovod elastic's model): a GradientSync over the engine of the
 * current membership generation (run/src/elastic/generations.ts), rebuilt by `reset()` on a new one.
 *
 * A watcher follows the launcher's generations in the store. A generation that loses a worker closes the current
 * engine at once, so a collective stuck on the dead peer fails now, as ERR_MEMBERSHIP naming the lost rank,
 * rather than at its timeout; a collective that fails on its own with a lost-peer error (ERR_PEER_CLOSED, ...)
 * waits up to LOSS_GRACE_MS for that generation and becomes ERR_MEMBERSHIP too, else its error stands. A
 * generation that only adds workers interrupts nothing: `joinPending()` reports it at the caller's next commit.
 *
 * Every rendezvous of generation g is under `gen-<g>/` in the job's store. While connecting a generation, a newer
 * one makes every member give up and connect the newest, so members that raced converge (each connect is bounded
 * by the timeout). On ps and hybrid each generation has parameter servers of its own (`elasticServerName`),
 * started by the launcher for that membership; the Trainer's state lives on the workers, so nothing on the
 * servers needs rolling back.
 */
export class ElasticSync implements GradientSync, ElasticControl {
  private engine: ConnectedEngine | undefined;
  private gen = -1;
  private record: GenerationRecord | undefined;
  private kind_: GradientSync['kind'] = 'ring';
  private caps_: EngineCapabilities = { rowSparse: 'allgather', concurrentCollectives: false };
  /** Generations the watcher has read, by number. */
  private readonly seen = new Map<number, GenerationRecord>();
  private latestSeen = -1;
  private waiters: Array<() => void> = [];
  /** The newer generation that interrupted the current engine (a loss, or this worker left out). */
  private interrupted: GenerationRecord | undefined;
  private closed = false;
  /** The join flag agreed by the last `allreduceMean` (its generation and the op count right after it). */
  private joinSeen: { gen: number; ops: number; join: boolean } | undefined;
  /** The generation this worker last reported entering (`atKey`). */
  private reportedGen = 0;
  private readonly totals = { bytesSent: 0, bytesReceived: 0, ops: 0 };

  private constructor(
    private readonly options: WorkerOptions & { elastic: { workerId: number; join: boolean } },
    private readonly job: JobContext,
    private readonly init: EngineOptions,
    private readonly timeline: Timeline | undefined,
  ) {}

  /**
   * Join the elastic job: a worker of the launch enters the newest generation; a joiner (SHOAL_ELASTIC_JOIN=1)
   * says it is ready and waits, within the timeout, for the generation that admits it. Collective with the other
   * members of that generation.
   */
  static async connect(options: WorkerOptions, job: JobContext, init: EngineOptions = {}, timeline?: Timeline): Promise<ElasticSync> {
    const e = options.elastic;
    if (e === undefined) throw Errors.config('SHOAL_ELASTIC', 'is not set: ElasticSync is for `shoal run --elastic` workers');
    const s = new ElasticSync({ ...options, elastic: e }, job, init, timeline);
    try {
      let g = await latestGeneration(job.store);
      if (e.join) {
        await job.store.set(readyKey(e.workerId), '1');
        const deadline = Date.now() + options.timeoutMs;
        for (;;) {
          const rec = await readGeneration(job.store, g, Math.max(1, deadline - Date.now()));
          if (rec.members.includes(e.workerId)) break;
          g += 1;
          if (Date.now() >= deadline) throw Errors.timeout(`worker ${e.workerId} joining the elastic job (no generation admitted it)`, options.timeoutMs);
        }
      }
      s.watch(g + 1);
      await s.enter(g);
    } catch (err) {
      await s.close();
      throw err;
    }
    return s;
  }

  get elastic(): ElasticControl {
    return this;
  }
  get kind(): GradientSync['kind'] {
    return this.kind_;
  }
  get capabilities(): EngineCapabilities {
    return this.caps_;
  }
  get rank(): number {
    return this.record!.members.indexOf(this.options.elastic.workerId);
  }
  get size(): number {
    return this.record!.members.length;
  }
  get generation(): number {
    return this.gen;
  }
  /** This worker's stable id (its rank changes with the generations). */
  get workerId(): number {
    return this.options.elastic.workerId;
  }

  broadcastParameters(params: readonly DenseTensor[]): Promise<void> {
    return this.call((s) => s.broadcastParameters(params));
  }
  /**
   * The mean of `grads` over the ranks. The join agreement rides on it: one more value, 1 on a rank that saw a
   * generation adding workers, whose mean every rank reads alike (`joinPending` at the next commit then needs no
   * collective of its own).
   */
  allreduceMean(grads: readonly DenseTensor[]): Promise<void> {
    return this.call(async (s) => {
      const flag = Float32Array.of(this.latestSeen > this.gen ? 1 : 0);
      await s.allreduceMean([...grads, { name: JOIN_FLAG, shape: [1], data: flag }]);
      this.joinSeen = { gen: this.gen, ops: this.opsNow(), join: flag[0]! > 0 };
    });
  }
  sparseAllreduceMean(grad: RowSparseTensor): Promise<RowSparseTensor> {
    return this.call((s) => {
      if (!s.sparseAllreduceMean) throw Errors.state(`the ${s.kind} engine has no sparseAllreduceMean`);
      return s.sparseAllreduceMean(grad);
    });
  }
  allreduceScalars(values: Float64Array): Promise<Float64Array> {
    return this.call((s) => s.allreduceScalars(values));
  }
  barrier(): Promise<void> {
    return this.call((s) => s.barrier());
  }
  stats(): { bytesSent: number; bytesReceived: number; ops: number } {
    const s = this.engine?.sync.stats() ?? { bytesSent: 0, bytesReceived: 0, ops: 0 };
    return { bytesSent: this.totals.bytesSent + s.bytesSent, bytesReceived: this.totals.bytesReceived + s.bytesReceived, ops: this.totals.ops + s.ops };
  }

  /**
   * Whether some rank saw a generation that adds workers. Right after an `allreduceMean` of this generation (a
   * training step) its agreed flag answers, with no collective; otherwise one scalar allreduce.
   */
  async joinPending(): Promise<boolean> {
    const seen = this.joinSeen;
    this.joinSeen = undefined;
    if (seen !== undefined && seen.gen === this.gen && seen.ops === this.opsNow()) return seen.join;
    const mine = this.latestSeen > this.gen ? 1 : 0;
    const r = await this.allreduceScalars(Float64Array.of(mine));
    return r[0]! > 0;
  }

  /** Collectives run on this worker's engines so far (to tell whether the last one was the flag's allreduce). */
  private opsNow(): number {
    return this.stats().ops;
  }

  async reset(): Promise<MembershipChange> {
    if (this.closed) throw Errors.closed(`elastic engine (worker ${this.workerId})`);
    const prev = this.gen;
    await this.closeEngine();
    this.interrupted = undefined;
    // The launcher writes a generation's record before it bumps the latest counter: the watcher may have seen
    // generation g while the counter still says g-1. Entering g-1 then connects a membership with the lost
    // worker in it, which is given up for g but goes on waiting for the dead worker to its timeout.
    await this.enter(Math.max(this.latestSeen, await latestGeneration(this.job.store)));
    const lost: LostWorker[] = [];
    const joined: number[] = [];
    for (let g = prev + 1; g <= this.gen; g++) {
      const r = this.seen.get(g) ?? (await readGeneration(this.job.store, g, this.options.timeoutMs));
      lost.push(...r.lost);
      joined.push(...r.joined);
    }
    return { generation: this.gen, workers: this.size, rank: this.rank, lost, joined };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.wake();
    await this.closeEngine();
  }

  /** Connect generation `g`, or the newest one when a newer appears meanwhile. */
  private async enter(g: number): Promise<void> {
    for (;;) {
      const rec = this.seen.get(g) ?? (await readGeneration(this.job.store, g, this.options.timeoutMs));
      const id = this.workerId;
      const rank = rec.members.indexOf(id);
      if (rank < 0) throw Errors.membership(`worker ${id} is not a member of generation ${g} (members: workers ${rec.members.join(', ')})`, { generation: g, workerId: id });
      const opts: WorkerOptions = { ...this.options, rank, worldSize: rec.members.length };
      const genJob: JobContext = { ...this.job, store: this.job.store.prefixed(genPrefix(g)) };
      const abandon = new AbortController();
      const connecting = connectEngine(opts, genJob, this.init, this.timeline, { signal: abandon.signal, ...(this.options.backend === 'ring' ? {} : { psServerName: elasticServerName(g) }) });
      const won = await Promise.race([connecting.then((e) => ({ e }), (err: unknown) => ({ err })), this.newerThan(g).then(() => ({ newer: true as const }))]);
      if ('e' in won) {
        this.engine = won.e;
        this.gen = g;
        this.record = rec;
        this.kind_ = won.e.sync.kind;
        this.caps_ = won.e.sync.capabilities;
        // Tell the launcher this worker is on g now: the servers of older generations may stop (ps, hybrid).
        if (g > this.reportedGen) {
          void this.job.store.add(atKey(id), g - this.reportedGen).catch(() => {});
          this.reportedGen = g;
        }
        // A loss published while connecting: the new engine is already stale.
        this.checkNewer();
        return;
      }
      if ('err' in won && this.latestSeen <= g) throw won.err;
      // A newer generation: give this attempt up (its group and pairs close now; a part that connects later is
      // closed then) and connect the newest.
      abandon.abort(Errors.membership(`generation ${this.latestSeen} replaces generation ${g} while connecting it`, { generation: this.latestSeen, workerId: id }));
      void connecting.then((e) => e.close().catch(() => {}), () => {});
      if (this.closed) throw Errors.closed(`elastic engine (worker ${id})`);
      g = Math.max(this.latestSeen, await latestGeneration(this.job.store));
    }
  }

  /** Resolves once a generation newer than `g` is seen (or the engine closes). */
  private newerThan(g: number): Promise<void> {
    if (this.latestSeen > g || this.closed) return Promise.resolve();
    return new Promise((res) => {
      const check = () => {
        if (this.latestSeen > g || this.closed) res();
        else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Follow the generations from `from` on, in order, for the life of this engine. */
  private watch(from: number): void {
    const loop = async () => {
      let next = from;
      while (!this.closed) {
        try {
          const rec = parseGeneration(await this.job.store.get(genKey(next), WATCH_SLICE_MS), next);
          this.seen.set(next, rec);
          this.latestSeen = next;
          next += 1;
          this.checkNewer();
          this.wake();
        } catch (e) {
          if (this.closed) return;
          if (isShoalError(e, 'ERR_TIMEOUT')) continue;
          return; // the store is gone (the job is ending): collectives report their own errors
        }
      }
    };
    void loop();
  }

  /** Interrupt the current engine when a newer generation lost a worker or left this one out. */
  private checkNewer(): void {
    if (this.interrupted || this.engine === undefined) return;
    for (let g = this.gen + 1; g <= this.latestSeen; g++) {
      const r = this.seen.get(g);
      if (r && (r.lost.length > 0 || !r.members.includes(this.workerId))) {
        this.interrupted = r;
        void this.closeEngine();
        return;
      }
    }
  }

  private async closeEngine(): Promise<void> {
    const e = this.engine;
    if (e === undefined) return;
    this.engine = undefined;
    const s = e.sync.stats();
    this.totals.bytesSent += s.bytesSent;
    this.totals.bytesReceived += s.bytesReceived;
    this.totals.ops += s.ops;
    await e.close().catch(() => {});
  }

  private membershipError(cause?: unknown): Error {
    const lost: LostWorker[] = [];
    for (let g = this.gen + 1; g <= this.latestSeen; g++) lost.push(...(this.seen.get(g)?.lost ?? []));
    const latest = this.seen.get(this.latestSeen);
    const what = lost.length ? `lost ${describeLost(lost)}` : `worker ${this.workerId} left out`;
    return Errors.membership(
      `generation ${this.latestSeen} (${latest?.members.length ?? '?'} worker(s)) replaces generation ${this.gen}: ${what}; roll back to the last commit and reset()`,
      { generation: this.latestSeen, lost, workerId: this.workerId },
      cause,
    );
  }

  /** Run `fn` on the current engine; a lost peer's error becomes ERR_MEMBERSHIP once the launcher says so. */
  private async call<T>(fn: (s: GradientSync) => Promise<T>): Promise<T> {
    if (this.interrupted) throw this.membershipError();
    const e = this.engine;
    if (e === undefined) throw this.closed ? Errors.closed(`elastic engine (worker ${this.workerId})`) : Errors.state('elastic engine: no generation connected; call reset() after ERR_MEMBERSHIP');
    try {
      return await fn(e.sync);
    } catch (err) {
      if (this.interrupted) throw this.membershipError(err);
      if (!this.closed && isShoalError(err) && LOSS_CODES.has(err.code)) {
        if (err.code === 'ERR_TIMEOUT') await this.reportStalled(err);
        const grace = Math.min(this.options.timeoutMs, LOSS_GRACE_MS);
        await Promise.race([this.interruption(), new Promise((r) => setTimeout(r, grace).unref())]);
        if (this.interrupted) throw this.membershipError(err);
      }
      throw err;
    }
  }

  /**
   * A collective timed out waiting for some ranks (a hung peer: SIGSTOP, a deadlock): name them to the launcher,
   * which stops them; their loss then interrupts this engine like any other.
   */
  private async reportStalled(err: Error): Promise<void> {
    const ranks = new Set<number>();
    for (const m of err.message.matchAll(/waiting for rank\(s\) (\d+(?:, ?\d+)*)|(?:recv from|send to) rank (\d+)/g)) {
      for (const r of (m[1] ?? m[2] ?? '').split(',')) if (r.trim() !== '') ranks.add(Number(r.trim()));
    }
    const members = this.record?.members ?? [];
    for (const r of ranks) {
      const id = members[r];
      if (id === undefined || id === this.workerId) continue;
      const report = JSON.stringify({ by: this.workerId, byRank: this.rank, generation: this.gen, message: err.message.slice(0, 500) });
      await this.job.store.set(suspectKey(id), report).catch(() => {});
    }
  }

  private interruption(): Promise<void> {
    if (this.interrupted || this.closed) return Promise.resolve();
    return new Promise((res) => {
      const check = () => {
        if (this.interrupted || this.closed) res();
        else this.waiters.push(check);
      };
      this.waiters.push(check);
    });
  }
}
