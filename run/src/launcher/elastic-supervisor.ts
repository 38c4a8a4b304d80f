import { Errors, TcpStore, type JobAuth } from '@shoal/core';
import type { LostWorker } from '@shoal/backends';
import { asText } from '@shoal/core';
import { MembershipLedger, readyKey, suspectKey, type GenerationHooks } from '../elastic/generations.js';

/** `shoal run --elastic`'s options (see `LaunchOptions.elastic`). */
export interface ElasticLaunchOptions {
  minWorkers: number;
  maxWorkers: number;
  replacements?: number;
}

/** What the supervisor needs of the launcher: start a worker, stop one, stop the job, and a log line. */
export interface ElasticLauncherHooks<W extends { exited: Promise<unknown> }> {
  /** Start a worker process as rank `rank` of `size` with the elastic environment of `workerId` (`env`). */
  spawn(rank: number, size: number, workerId: number, join: boolean): W;
  /** The running worker of stable id `workerId`, if any. */
  workerOf(workerId: number): W | undefined;
  kill(worker: W, signal: NodeJS.Signals): void;
  /** Stop every worker: the job fails (`failure`). */
  stopAll(): void;
  stopping(): boolean;
  log(line: string): void;
  /** Around each generation's publication (ps/hybrid: start its servers, stop the previous ones). */
  generations?: GenerationHooks;
}

/** Check `elastic` against the launch (ERR_CONFIG naming the conflict); nothing starts on error. */
export function checkElasticLaunch(e: ElasticLaunchOptions, o: { numWorkers: number; threads: boolean; durable: boolean; hosts: boolean }): void {
  if (o.threads) throw Errors.config('elastic', 'needs worker processes: drop --threads');
  if (o.durable) throw Errors.config('elastic', 'and --ps-durable do not go together yet: an elastic job starts fresh servers for each membership');
  if (o.hosts) throw Errors.config('elastic', 'runs on one host so far: drop --hosts');
  const n = o.numWorkers;
  if (!(Number.isInteger(e.minWorkers) && Number.isInteger(e.maxWorkers) && 1 <= e.minWorkers && e.minWorkers <= n && n <= e.maxWorkers)) {
    throw Errors.config('elastic', `needs 1 <= min-workers (${e.minWorkers}) <= -n (${n}) <= max-workers (${e.maxWorkers})`);
  }
  if (e.replacements !== undefined && !(Number.isInteger(e.replacements) && e.replacements >= 0)) throw Errors.config('elastic', `replacements must be an integer >= 0, got ${e.replacements}`);
}

/**
 * The launcher's side of an elastic job: owns the membership ledger (published through its own client of the
 * job's store), turns a worker's death into a new generation or, below `minWorkers`, into the job's failure,
 * and starts replacements, admitting each once it is up (within the timeout) in a generation of its own.
 */
export class ElasticSupervisor<W extends { exited: Promise<unknown> }> {
  private readonly ledger: MembershipLedger;
  private replacementsLeft: number;
  private readonly lost: LostWorker[] = [];
  private readonly joined: number[] = [];
  /** Started joiners not admitted yet, by worker id. */
  private readonly pending = new Map<number, W>();
  /** Store writes and joiner admissions still under way. */
  private work: Promise<void> = Promise.resolve();
  private failure_: { rank: number; error: string } | undefined;
  /** Workers stopped because others timed out waiting for them: why (their loss's reason). */
  private readonly stalled = new Map<number, string>();
  private closed = false;

  private constructor(
    private readonly client: TcpStore,
    private readonly jobId: string,
    opts: ElasticLaunchOptions,
    numWorkers: number,
    private readonly timeoutMs: number,
    private readonly hooks: ElasticLauncherHooks<W>,
  ) {
    this.ledger = new MembershipLedger(client.prefixed(jobId), opts.minWorkers, opts.maxWorkers, numWorkers, hooks.generations);
    this.replacementsLeft = opts.replacements ?? 0;
  }

  /** Connect to the job's store and publish generation 0 (every launched worker). */
  static async start<W extends { exited: Promise<unknown> }>(o: { storeUrl: string; auth: JobAuth; jobId: string; elastic: ElasticLaunchOptions; numWorkers: number; timeoutMs: number; hooks: ElasticLauncherHooks<W> }): Promise<ElasticSupervisor<W>> {
    const client = await TcpStore.connect(o.storeUrl, { auth: o.auth, timeoutMs: o.timeoutMs });
    const s = new ElasticSupervisor(client, o.jobId, o.elastic, o.numWorkers, o.timeoutMs, o.hooks);
    try {
      await s.ledger.start();
    } catch (e) {
      await client.close();
      throw e;
    }
    for (const id of s.ledger.members) s.watchStalled(id);
    return s;
  }

  /** The environment that makes a worker elastic. */
  env(workerId: number, join: boolean): Record<string, string> {
    return { SHOAL_ELASTIC: '1', SHOAL_WORKER_ID: String(workerId), ...(join ? { SHOAL_ELASTIC_JOIN: '1' } : {}) };
  }

  /** Set when the job cannot go on (fewer than min-workers left): the worker to blame and why. */
  get failure(): { rank: number; error: string } | undefined {
    return this.failure_;
  }

  summary(): { generation: number; workers: number; lost: LostWorker[]; joined: number[] } {
    return { generation: this.ledger.generation, workers: this.ledger.members.length, lost: [...this.lost], joined: [...this.joined] };
  }

  /** Resolves once the generations published and the admissions started so far are done. */
  settled(): Promise<void> {
    return this.work;
  }

  /**
   * A worker ended badly (`reason`: `killed by SIGKILL`, `exit code 1`; `last`: its last error line). Always
   * handled here: a member is dropped in a new generation (a replacement started if any is left), or the job
   * fails below min-workers; a joiner that died before it was admitted is only reported.
   */
  onWorkerFailed(workerId: number, reason: string, last: string | undefined): void {
    // a worker the others reported hung was killed by us: its loss names why
    if (this.pending.delete(workerId)) {
      this.hooks.log(`worker ${workerId} ended (${reason}) before it joined; the job goes on`);
      return;
    }
    const l = this.ledger;
    if (!l.isMember(workerId)) return;
    reason = this.stalled.get(workerId) ?? reason;
    const rank = l.rankOf(workerId);
    const r = l.lose(workerId, reason);
    if (r.error !== undefined) {
      const before = this.lost.length ? `; lost before: ${this.lost.map((x) => `worker ${x.workerId} (${x.reason})`).join(', ')}` : '';
      this.failure_ = { rank: workerId, error: `${r.error}${before}${last ? `\nits last error: ${last}` : ''}` };
      this.hooks.stopAll();
      return;
    }
    this.lost.push(...r.record!.lost);
    this.hooks.log(`rank ${rank} (worker ${workerId}) lost (${reason}${last && /Error|ERR_[A-Z]/.test(last) ? `: ${last}` : ''}); generation ${r.record!.generation} goes on with ${r.record!.members.length} worker(s)`);
    this.work = this.work.then(() => l.flushed()).catch(() => {});
    if (this.replacementsLeft > 0 && !this.hooks.stopping()) {
      this.replacementsLeft -= 1;
      this.startJoiner();
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.client.close();
  }

  /**
   * Wait (in slices, for the worker's life) for a report that others timed out waiting for `workerId`; then stop
   * it with SIGKILL, so a hung worker becomes a loss naming it rather than a cascade of timeouts.
   */
  private watchStalled(workerId: number): void {
    const loop = async () => {
      const store = this.client.prefixed(this.jobId);
      while (!this.closed && !this.hooks.stopping()) {
        let report: { byRank?: number; by?: number; message?: string };
        try {
          report = JSON.parse(asText(await store.get(suspectKey(workerId), 10 * 60_000))) as typeof report;
        } catch (e) {
          if (this.closed || !(e instanceof Error && (e as { code?: string }).code === 'ERR_TIMEOUT')) return;
          continue;
        }
        const w = this.hooks.workerOf(workerId);
        if (!this.ledger.isMember(workerId) || w === undefined) return;
        const why = `stopped making progress: rank ${report.byRank} (worker ${report.by}) timed out waiting for it`;
        this.stalled.set(workerId, why);
        this.hooks.log(`worker ${workerId} (rank ${this.ledger.rankOf(workerId)}) ${why}; stopping it`);
        this.hooks.kill(w, 'SIGKILL');
        return;
      }
    };
    void loop();
  }

  /** Start a replacement; admit it in a new generation once it says it is up (within the timeout). */
  private startJoiner(): void {
    const l = this.ledger;
    const id = l.newWorkerId();
    const size = l.members.length + 1;
    const w = this.hooks.spawn(size - 1, size, id, true);
    this.pending.set(id, w);
    this.hooks.log(`starting worker ${id} to replace it`);
    const admit = async () => {
      try {
        // the joiner's own end (it died while starting) ends the wait too
        await Promise.race([this.client.prefixed(this.jobId).get(readyKey(id), this.timeoutMs), w.exited.then(() => Promise.reject(new Error('ended')))]);
      } catch {
        if (this.pending.delete(id) && !this.hooks.stopping()) {
          this.hooks.log(`worker ${id} did not come up within ${this.timeoutMs} ms; stopping it`);
          this.hooks.kill(w, 'SIGKILL');
        }
        return;
      }
      if (this.hooks.stopping() || !this.pending.delete(id)) return;
      const rec = l.admit(id);
      if (rec === undefined) {
        this.hooks.log(`worker ${id} is not needed (already ${l.members.length} workers); stopping it`);
        this.hooks.kill(w, 'SIGTERM');
        return;
      }
      this.joined.push(id);
      this.watchStalled(id);
      this.hooks.log(`worker ${id} joins at generation ${rec.generation} with ${rec.members.length} worker(s)`);
      await l.flushed();
    };
    this.work = this.work.then(admit).catch(() => {});
  }
}
