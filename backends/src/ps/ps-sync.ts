import { Errors, loadKernels, type FloatArray, type ReduceKernels } from '@shoal/core';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';
import type { DenseTensor, EngineCapabilities, GradientSync, RowSparseTensor } from '../api.js';
import type { KeySpec } from './key-layout.js';
import type { UpdaterSpec } from './updaters.js';
import { KVWorker, type ConnectKVWorkerOptions, type Guard } from './kv-worker.js';
import { checkSignatures, type Signature } from './signature.js';

/**
 * GradientSync over the parameter server (sync mode servers, sum-only keys):
 * - `allreduceMean`: push the gradients, pull the sum (one round trip per server), divide by the worker count;
 * - `broadcastParameters`: KVStore init with rank 0's values, then pull (later broadcasts of the same names:
 *   rank 0 pushes its values, the others zeros);
 * - `sparseAllreduceMean`: row-sparse push of the touched rows, pull of the merged rows of the round: only
 *   touched rows cross the wire;
 * - `allreduceScalars` / `barrier`: a gather on server 0.
 * Before each collective the ranks exchange a small signature through server 0 (names, shapes, and whether a
 * gradient holds NaN/Inf), so a mismatch raises ERR_MISMATCH and a NaN raises ERR_NAN on every rank instead of
 * hanging; the engine stays usable afterwards. Every collective is numbered and names its kind to server 0, so
 * ranks that call different collectives (a barrier on one, an allreduce on another) get ERR_MISMATCH at once.
 *
 * The server-optimizer path (`initWeights`, `pushGradsPullWeights`) uses keys the servers update with their
 * configured updater: workers push gradients and pull fresh weights.
 */
export interface PsSyncOptions {
  /** Allow NaN/Inf in gradients (default false: ERR_NAN naming the tensor on every rank). */
  allowNonFinite?: boolean;
  /** Called by `close()` (e.g. stop servers this rank owns). */
  onClose?: () => Promise<void>;
  /**
   * `close()` first meets the other ranks' (a gather on server 0, at most `closeTogetherMs`, default 10 s; a lost
   * rank ends it at once), so servers one rank hosts (`shoal run --ps-placement worker`) outlive every rank's
   * last request. Every rank of the job must pass the same.
   */
  closeTogether?: boolean;
  closeTogetherMs?: number;
  /**
   * Record each op on this rank's timeline: `negotiate` (the signature exchange through server 0) and `push+pull`
   * (dense, lane `sync`; args: tensors, bytes), `sparse push+pull` (lane `sync sparse`, beside the dense round it
   * overlaps), `gather` (scalars, barrier); collectives on known keys check their signatures in the push+pull
   * itself (no `negotiate`). Not owned.
   */
  timeline?: Timeline;
  /**
   * `capabilities.sparseAsDenseBytes`: embedding tables up to this many bytes go through `allreduceMean` whole.
   * Every rank must give the same. Default (with `connect`): `SPARSE_AS_DENSE_BYTES` when every worker reaches
   * every server through shared memory (the ranks agree on that through server 0 at connect), else 0.
   */
  sparseAsDenseBytes?: number;
}

/**
 * Tables up to this size (4 MiB) go whole through the same-host staging buffers by default. Measured on the
 * recommender bench model (two 4000x32 tables, 2048 of 8000 rows touched per step, 2 workers, 1 server): CPU per
 * step fell from 10.7 to 7.9 ms per worker and from 3.5 to 1.6 ms on the server (load ~12).
 */
export const SPARSE_AS_DENSE_BYTES = 4 << 20;


export class PsSync implements GradientSync {
  readonly kind = 'ps' as const;
  readonly capabilities: EngineCapabilities;
  readonly rank: number;
  readonly size: number;
  private seq = 0;
  private readonly declared = new Set<string>();
  private ops = 0;
  private closed = false;
  private readonly kernels: ReduceKernels = loadKernels();
  private readonly lanes?: { dense: TimelineLane; sparse: TimelineLane };

  constructor(
    readonly kv: KVWorker,
    private readonly o: PsSyncOptions = {},
  ) {
    this.rank = kv.rank;
    this.size = kv.numWorkers;
    const dense = o.sparseAsDenseBytes ?? 0;
    if (!(Number.isSafeInteger(dense) && dense >= 0)) throw Errors.invalidArg('PsSync options.sparseAsDenseBytes', `must be an integer >= 0, got ${o.sparseAsDenseBytes}`);
    this.capabilities = { rowSparse: 'servers', concurrentCollectives: true, sparseAsDenseBytes: dense };
    if (o.timeline) this.lanes = { dense: o.timeline.lane('sync'), sparse: o.timeline.lane('sync sparse') };
  }

  /** `fn` as a span when tracing (`sparse`: on the sparse lane). */
  private traced<T>(name: string, fn: () => Promise<T>, args?: Record<string, number | string>, sparse = false): Promise<T> {
    const tl = this.o.timeline;
    return tl ? tl.trace(sparse ? this.lanes!.sparse : this.lanes!.dense, name, fn, args) : fn();
  }

  /** Connect a worker to running servers (see `startPsServers`). */
  static async connect(o: ConnectKVWorkerOptions & PsSyncOptions): Promise<PsSync> {
    const kv = await KVWorker.connect(o);
    let dense = o.sparseAsDenseBytes;
    if (dense === undefined && kv.numWorkers > 1 && kv.mode === 'sync') {
      // Whole tables pay only when every rank's values go through shared memory; the ranks must agree (they
      // would otherwise call different collectives), so they decide together through server 0.
      try {
        const all = await kv.gather('ps-sync: shared plane', kv.sharedPlane, 'connect');
        dense = all.every((x) => x === true) ? SPARSE_AS_DENSE_BYTES : 0;
      } catch (e) {
        await kv.close();
        throw e;
      }
    }
    return new PsSync(kv, { ...o, sparseAsDenseBytes: dense ?? 0 });
  }

  async broadcastParameters(params: readonly DenseTensor[]): Promise<void> {
    this.live();
    await this.agree('broadcastParameters', params, false);
    const fresh = params.filter((p) => !this.declared.has(`b:${p.name}`));
    if (fresh.length) {
      await this.kv.init(
        fresh.map((p) => ({ key: `b:${p.name}`, size: p.data.length, update: 'assign' })),
        fresh.map((p) => p.data),
      );
      for (const p of fresh) this.declared.add(`b:${p.name}`);
    }
    const old = params.filter((p) => !fresh.includes(p));
    if (old.length) {
      this.needSync('broadcastParameters (of names broadcast before)');
      await this.kv.push(
        old.map((p) => `b:${p.name}`),
        old.map((p) => (this.rank === 0 ? p.data : new Float32Array(p.data.length))),
      );
    }
    await this.kv.pull(
      params.map((p) => `b:${p.name}`),
      params.map((p) => p.data),
    );
    this.ops++;
  }

  /**
   * The servers' mode. `async` servers apply each push on arrival: only the server-optimizer path
   * (`initWeights`, `pushGradsPullWeights`), the first `broadcastParameters` and the gathers (`allreduceScalars`,
   * `barrier`) have a meaning there; the averaging collectives throw ERR_STATE.
   */
  get mode(): 'sync' | 'async' {
    return this.kv.mode;
  }

  /** ERR_STATE for a collective that needs sync rounds on async servers. */
  private needSync(op: string): void {
    if (this.kv.mode === 'async') throw Errors.state(`PsSync.${op} averages over sync rounds, but the ps servers run in async mode (shoal run --ps-mode async): use the Trainer (it pushes updates and pulls weights) or initWeights/pushGradsPullWeights`);
  }

  async allreduceMean(grads: readonly DenseTensor[]): Promise<void> {
    this.live();
    this.needSync('allreduceMean');
    const sig = this.signature(grads, !this.o.allowNonFinite);
    const fast = this.guard('allreduceMean', sig, grads.length ? grads.map((g) => `g:${g.name}`) : null);
    if (fast) {
      // Keys known: the signature check rides on the push (one round trip, see `Guard`).
      const keys = grads.map((g) => `g:${g.name}`);
      const arrays = grads.map((g) => g.data);
      await this.traced('push+pull', () => this.kv.pushPull(keys, arrays, arrays, fast), this.o.timeline ? { tensors: grads.length, bytes: arrays.reduce((a, x) => a + x.byteLength, 0) } : undefined);
      for (const a of arrays) this.divide(a);
      this.ops++;
      return;
    }
    await this.traced('negotiate', () => this.exchange('allreduceMean', sig));
    if (grads.length === 0) return;
    await this.ensure(grads.map((g) => ({ key: `g:${g.name}`, size: g.data.length, update: 'assign' })));
    const keys = grads.map((g) => `g:${g.name}`);
    const arrays = grads.map((g) => g.data);
    await this.traced('push+pull', () => this.kv.pushPull(keys, arrays, arrays), this.o.timeline ? { tensors: grads.length, bytes: arrays.reduce((a, x) => a + x.byteLength, 0) } : undefined);
    for (const a of arrays) this.divide(a);
    this.ops++;
  }

  async sparseAllreduceMean(grad: RowSparseTensor): Promise<RowSparseTensor> {
    this.live();
    this.needSync('sparseAllreduceMean');
    const nan = !this.o.allowNonFinite && this.kernels.firstNonFinite(grad.rows) >= 0 ? grad.name : null;
    const sig: Signature = { names: [grad.name], shapes: [`${grad.numRows}x${grad.rowSize}`], nan };
    const key = `s:${grad.name}`;
    const fast = this.guard('sparseAllreduceMean', sig, [key]);
    let last: { rowIds: Int32Array; rows: FloatArray };
    let t0 = this.o.timeline?.now();
    if (fast) {
      // Key known: the signature check, the push and the pull of the merged rows in one request per server.
      last = await this.kv.rowSparsePushPullLast(key, grad.rowIds, grad.rows, fast);
    } else {
      await this.traced('negotiate', () => this.exchange('sparseAllreduceMean', sig), undefined, true);
      await this.ensure([{ key, size: grad.numRows * grad.rowSize, rows: { numRows: grad.numRows, rowSize: grad.rowSize }, update: 'assign' }]);
      // The pull of the merged rows goes out right behind the push (it counts this push, so the servers answer it
      // once the round is complete): one round trip instead of two.
      t0 = this.o.timeline?.now();
      const pushed = this.kv.rowSparsePush(key, grad.rowIds, grad.rows);
      const pulled = this.kv.rowSparsePullLast(key);
      pulled.catch(() => {}); // awaited below; if the push fails first, not unhandled
      await pushed;
      last = await pulled;
    }
    this.o.timeline?.span(this.lanes!.sparse, 'sparse push+pull', t0!, { tensor: grad.name, rows: grad.rowIds.length });
    const rows = last.rows as Float32Array;
    this.divide(rows);
    this.ops++;
    return { name: grad.name, numRows: grad.numRows, rowSize: grad.rowSize, rowIds: last.rowIds, rows };
  }

  /**
   * A gather on server 0: `values` travel in one message, within the server's bound on this worker's messages (1
   * MiB, 131,072 scalars, before any key is declared; then at least the largest slice on server 0), else
   * ERR_INVALID_ARG naming both sizes.
   */
  async allreduceScalars(values: Float64Array): Promise<Float64Array> {
    this.live();
    const all = await this.traced('gather', () => this.kv.gather(this.nextTag(), values, 'allreduceScalars'));
    const out = new Float64Array(values.length);
    for (const v of all) {
      if (v.length !== values.length) throw Errors.mismatch('allreduceScalars', `lengths differ across ranks (${all.map((x) => x.length).join(', ')})`);
      for (let i = 0; i < out.length; i++) out[i]! += v[i]!;
    }
    for (let i = 0; i < out.length; i++) out[i]! /= this.size;
    this.ops++;
    return out;
  }

  async barrier(): Promise<void> {
    this.live();
    await this.kv.gather(this.nextTag(), null, 'barrier');
    this.ops++;
  }

  /**
   * Server-optimizer path, step 1: declare weights the servers own and update with their updater (or `updater`,
   * this key's own rule; rank 0's values win), then pull them into `params`.
   */
  async initWeights(params: readonly DenseTensor[], updater?: Exclude<UpdaterSpec, { type: 'module' }>): Promise<void> {
    this.live();
    await this.agree('initWeights', params, false);
    await this.ensure(
      params.map((p) => ({ key: `w:${p.name}`, size: p.data.length, update: 'optimizer', ...(updater ? { updater } : {}) })),
      params.map((p) => p.data),
    );
    await this.kv.pull(
      params.map((p) => `w:${p.name}`),
      params.map((p) => p.data),
    );
  }

  /**
   * Server-optimizer path, each step: push `grads` (same names as the weights), pull the updated weights into
   * `params`. One round trip per server.
   */
  async pushGradsPullWeights(grads: readonly DenseTensor[], params: readonly DenseTensor[]): Promise<void> {
    this.live();
    if (!this.o.allowNonFinite) for (const g of grads) if (this.kernels.firstNonFinite(g.data) >= 0) throw Errors.nan(`gradient "${g.name}"`, { rank: this.rank });
    await this.kv.pushPull(
      grads.map((g) => `w:${g.name}`),
      grads.map((g) => g.data),
      params.map((p) => p.data),
    );
    this.ops++;
  }

  stats(): { bytesSent: number; bytesReceived: number; ops: number } {
    const s = this.kv.stats();
    return { bytesSent: s.bytesSent, bytesReceived: s.bytesReceived, ops: this.ops };
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.o.closeTogether && this.size > 1) {
      const ms = this.o.closeTogetherMs ?? 10_000;
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([this.kv.gather('close', null, 'close').catch(() => {}), new Promise((r) => (timer = setTimeout(r, ms)))]);
      clearTimeout(timer);
    }
    await this.kv.close();
    await this.o.onClose?.();
  }

  /**
   * Sums over the ranks -> means: `x / size`. For a power-of-two size that is `x * (1 / size)` exactly (the kernels'
   * scale); other sizes divide, as before.
   */
  private divide(a: Float32Array): void {
    const n = this.size;
    if (n === 1) return;
    if ((n & (n - 1)) === 0) this.kernels.scale(a, 1 / n);
    else for (let i = 0; i < a.length; i++) a[i]! /= n;
  }

  private live(): void {
    if (this.closed) throw Errors.closed(`PsSync rank ${this.rank}`);
  }

  /** Declare keys not declared yet (all ranks reach this with the same list, the signature check saw to it). */
  private async ensure(specs: KeySpec[], values?: readonly (Float32Array | Float64Array)[]): Promise<void> {
    const idx = specs.map((_, i) => i).filter((i) => !this.declared.has(specs[i]!.key));
    if (!idx.length) return;
    await this.kv.init(
      idx.map((i) => specs[i]!),
      idx.map((i) => values?.[i] ?? new Float32Array(specs[i]!.size)),
    );
    for (const i of idx) this.declared.add(specs[i]!.key);
  }

  private agree(op: string, ts: readonly DenseTensor[], checkNan: boolean): Promise<void> {
    return this.exchange(op, this.signature(ts, checkNan));
  }

  /** This rank's signature of a collective on `ts` (throws ERR_INVALID_ARG for a tensor whose shape and data disagree). */
  private signature(ts: readonly DenseTensor[], checkNan: boolean): Signature {
    let nan: string | null = null;
    if (checkNan) for (const t of ts) if (this.kernels.firstNonFinite(t.data) >= 0) (nan ??= t.name);
    for (const t of ts) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      if (n !== t.data.length) throw Errors.invalidArg(`tensor "${t.name}"`, `has shape [${t.shape.join(', ')}] (${n} values) but ${t.data.length} values`);
    }
    return { names: ts.map((t) => t.name), shapes: ts.map((t) => `[${t.shape.join(', ')}]`), nan };
  }

  /**
   * The guard of the next collective when it may take one round trip (`Guard`): several ranks, servers that keep
   * their gathers (no resend after a restart), and `keys` declared by an earlier collective (null: never).
   */
  private guard(op: string, sig: Signature, keys: readonly string[] | null): Guard | undefined {
    if (this.size === 1 || !keys || !this.kv.guardable || !keys.every((k) => this.declared.has(k))) return undefined;
    return { tag: this.nextTag(), op, sig, check: (all) => checkSignatures(op, all as Signature[], this.rank) };
  }

  /**
   * The tag of the next collective: its number alone (the operation goes beside it), so ranks that call different
   * collectives at the same point meet under one tag and all get ERR_MISMATCH at once instead of a timeout.
   */
  private nextTag(): string {
    return `collective #${this.seq++}`;
  }

  /** Exchange signatures through server 0; throw the same ERR_MISMATCH / ERR_NAN on every rank. */
  private async exchange(op: string, sig: Signature): Promise<void> {
    if (this.size === 1) {
      if (sig.nan) throw Errors.nan(`gradient "${sig.nan}" on rank 0 (${op})`, { rank: 0, badRank: 0 });
      return;
    }
    checkSignatures(op, await this.kv.gather<Signature>(this.nextTag(), sig, op), this.rank);
  }
}


