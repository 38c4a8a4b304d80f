import { randomBytes } from 'node:crypto';
import { Errors, ShoalError, type NumericArray, type ReduceOp, type Store, asText, DEFAULT_TIMEOUT_MS } from '@shoal/core';
import { requireNativeAddon } from '@shoal/core/kernels';
import { deferred, MAX_TIMER_MS, type Deferred } from '@shoal/core/util';

/**
 * Same-host collectives over one shared segment (core/native/shmcoll; DeepSpeed's and oneCCL's CPU shm
 * allreduce). All `size` ranks of a group on one host map one POSIX shared-memory segment holding, per rank,
 * a few chunk-sized data slots and three sequence words, plus shared result buffers. An allreduce moves the
 * payload in chunks (`chunkBytes`, pipelined over `buffers` slot sets): every rank copies its chunk into its
 * slot, reduces ITS 1/size slice of the chunk over all slots in rank order into the result buffer, and copies
 * the whole reduced chunk out. Each element is reduced once, by one rank, in rank order, so every rank gets
 * bitwise the same result, independent of timing. See docs/algorithms.md ("Shared-segment allreduce").
 *
 * Connection: collective through the store (already namespaced for this group): rank 0 creates the segment
 * (`shoal-<prefix>-coll-<pid>-<random>`, so `removeStaleSegments(prefix)` clears it), publishes its name, every
 * rank maps it and says so in the store, and rank 0 unlinks it as soon as all have mapped it: nothing is left
 * in /dev/shm after that, whatever happens to the ranks.
 *
 * Threads: payloads up to `syncMaxBytes` run on the calling (JS) thread for at most `syncSpinMicros`; an op
 * that is not finished by then (a peer is late) continues on the collective's own native thread, as do larger
 * payloads, so waiting for a slow peer never blocks the event loop beyond that spin. The caller must not touch
 * `data` until the returned promise settles.
 *
 * Failure: every wait is bounded by `timeoutMs` (ERR_TIMEOUT naming the op and the missing ranks). A rank that
 * fails (timeout, dead peer) or closes sets an abort word in the segment and wakes everyone: every other rank's
 * pending or next op fails with ERR_PEER_CLOSED, and waits also notice a SIGKILLed peer process (its pid, kept
 * in the segment, is gone). Those errors BREAK the group (later calls raise the same error). Mismatched calls
 * (element count, dtype, op, kind or root differ across ranks) raise ERR_MISMATCH on every rank and leave the
 * group usable.
 *
 * Concurrency: calls are queued and run one at a time in call order; all ranks must call the same collectives
 * in the same order (the gloo/MPI contract). Several collectives may coexist in one process (no module state);
 * ranks may be processes or worker threads of one process.
 */
export interface ShmCollectiveOptions {
  rank: number;
  size: number;
  /** Rendezvous store namespaced for this group (e.g. `store.prefixed('ring-shm')`). */
  store: Store;
  /** Segment name prefix, normally the job id. Default 'shoal'. */
  prefix?: string;
  /** Bytes per chunk (multiple of 4096). Default 1 MiB. */
  chunkBytes?: number;
  /** Slot sets the chunks rotate through (2..16). Default 4. */
  buffers?: number;
  /** Bound of every wait of an op, and of connecting (ms). Default 30 000. */
  timeoutMs?: number;
  /**
   * Payloads of at most this many bytes start on the calling thread (no hop to the native thread; the event loop
   * is then blocked for at most `syncSpinMicros` plus the copy and reduction of this many bytes, ~0.1 ms per MiB
   * here). Measured at n=2: 1 MiB p50 110 us vs 125 us through the native thread, 256 KiB 27 vs 33 us, 8 B 1.4 vs
   * 4.4 us. Default 1 MiB.
   */
  syncMaxBytes?: number;
  /** How long such an op may spin on the calling thread before it moves to the native thread (µs). Default 50. */
  syncSpinMicros?: number;
  /** How long the native thread spins on a wait before it sleeps on the futex (µs). Default 50. */
  spinMicros?: number;
}

export type CollectiveOp = ReduceOp | 'mean';

interface NativeCollective {
  start(kind: number, dtype: number, op: number, data: NumericArray | Uint8Array | null, count: number, root: number, opSeq: number, timeoutMs: number, syncSpinUs: number, spinUs: number): number | [string, string];
  attached(): number;
  unlink(): void;
  abort(reason: number): void;
  aborted(): [number, number] | null;
  close(): void;
  info(): { name: string; bytes: number; chunkBytes: number; nbuf: number };
}
interface Addon {
  Collective: new (name: string, create: boolean, rank: number, size: number, chunkBytes: number, nbuf: number, onDone: (code: string, message: string) => void) => NativeCollective;
}

function loadAddon(): Addon {
  try {
    return requireNativeAddon<Addon>('shmcoll');
  } catch (e) {
    throw Errors.transport('shm-collective', 'the shared-segment collective addon is not built: run `npm rebuild @shoal/core` (installed package) or `npm run build:native` (checkout)', e);
  }
}

/** True when the addon is built (callers choose between this collective and the transport path). */
export function shmCollectiveAvailable(): boolean {
  try {
    loadAddon();
    return true;
  } catch {
    return false;
  }
}

const KIND = { allreduce: 0, broadcast: 1 } as const;
const OPS: Readonly<Record<CollectiveOp, number>> = { sum: 0, min: 1, max: 2, mean: 3 };
const ABORT_CLOSED = 1;
const ABORT_ERROR = 4;

function dtypeCode(data: NumericArray | Uint8Array): number {
  if (data instanceof Float32Array) return 0;
  if (data instanceof Float64Array) return 1;
  if (data instanceof Int32Array) return 2;
  if (data instanceof Uint8Array) return 3;
  throw Errors.invalidArg('data', `must be a Float32Array, Float64Array or Int32Array, got ${Object.prototype.toString.call(data)}`);
}

export class ShmCollective {
  readonly rank: number;
  readonly size: number;
  readonly timeoutMs: number;
  private readonly native: NativeCollective;
  private readonly syncMaxBytes: number;
  private readonly syncSpinMicros: number;
  private readonly spinMicros: number;
  private opSeq = 0;
  private tail: Promise<unknown> = Promise.resolve();
  private inflight: Deferred<void> | undefined;
  private busy = false;
  /** Calls waiting for the op in flight (they run in call order). */
  private queued = 0;
  private failure: ShoalError | undefined;
  private closedFlag = false;
  private readonly st = { ops: 0, bytes: 0 };

  private constructor(opts: ShmCollectiveOptions, native: NativeCollective) {
    this.rank = opts.rank;
    this.size = opts.size;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.syncMaxBytes = opts.syncMaxBytes ?? 1 << 20;
    this.syncSpinMicros = opts.syncSpinMicros ?? 50;
    this.spinMicros = opts.spinMicros ?? 50;
    this.native = native;
  }

  /**
   * Create (rank 0) or map (others) the group's segment; collective over all `size` ranks, which must call it
   * within `timeoutMs`. Rejects with ERR_TIMEOUT naming the missing rank's store key.
   */
  static async connect(opts: ShmCollectiveOptions): Promise<ShmCollective> {
    const { rank, size, store } = opts;
    if (!Number.isInteger(size) || size < 1 || size > 256) throw Errors.invalidArg('options.size', `must be an integer in [1, 256], got ${size}`);
    if (!Number.isInteger(rank) || rank < 0 || rank >= size) throw Errors.invalidArg('options.rank', `must be an integer in [0, ${size}), got ${rank}`);
    const chunkBytes = opts.chunkBytes ?? 1 << 20;
    if (!Number.isInteger(chunkBytes) || chunkBytes < 4096 || chunkBytes % 4096 !== 0 || chunkBytes > 1 << 30)
      throw Errors.invalidArg('options.chunkBytes', `must be a multiple of 4096 in [4096, 2^30], got ${chunkBytes}`);
    const buffers = opts.buffers ?? 4;
    if (!Number.isInteger(buffers) || buffers < 2 || buffers > 16) throw Errors.invalidArg('options.buffers', `must be an integer in [2, 16], got ${buffers}`);
    // Infinity (the project's "no timeout") and huge values become the longest timer Node has (~24.8 days): the
    // native side takes whole milliseconds.
    const timeoutMs = Math.min(opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, MAX_TIMER_MS);
    if (!(timeoutMs > 0)) throw Errors.invalidArg('options.timeoutMs', `must be > 0, got ${opts.timeoutMs}`);
    for (const k of ['syncMaxBytes', 'syncSpinMicros', 'spinMicros'] as const) {
      const v = opts[k];
      if (v !== undefined && !(v >= 0)) throw Errors.invalidArg(`options.${k}`, `must be >= 0, got ${v}`);
    }
    const prefix = opts.prefix ?? 'shoal';
    if (!/^[A-Za-z0-9_.-]+$/.test(prefix)) throw Errors.invalidArg('options.prefix', `must match [A-Za-z0-9_.-]+, got ${prefix}`);
    const addon = loadAddon();
    // The completion callback reaches the instance through this box (the instance exists only after the native object).
    const box: { self?: ShmCollective } = {};
    const onDone = (code: string, message: string) => box.self?.onDone(code, message);
    let native: NativeCollective;
    if (rank === 0) {
      const name = `shoal-${prefix}-coll-${process.pid}-${randomBytes(4).toString('hex')}`;
      try {
        native = new addon.Collective(`/${name}`, true, 0, size, chunkBytes, buffers, onDone);
      } catch (e) {
        throw Errors.transport(`shm-collective create /dev/shm/${name}`, (e as Error).message, e);
      }
      try {
        await store.set('shmcoll/name', name);
        for (let r = 1; r < size; r++) await store.get(`shmcoll/mapped/${r}`, timeoutMs);
      } catch (e) {
        native.unlink();
        native.close();
        throw e;
      }
      native.unlink();
    } else {
      const name = asText(await store.get('shmcoll/name', timeoutMs));
      try {
        native = new addon.Collective(`/${name}`, false, rank, size, 0, 0, onDone);
      } catch (e) {
        const code = (e as { code?: string }).code;
        if (code === 'ENOENT') throw Errors.peerClosed(`shm-collective /dev/shm/${name}`, 'segment gone before this rank mapped it (rank 0 failed?)', e);
        throw Errors.transport(`shm-collective attach /dev/shm/${name}`, (e as Error).message, e);
      }
      try {
        await store.set(`shmcoll/mapped/${rank}`, '1');
      } catch (e) {
        native.close();
        throw e;
      }
    }
    const c = new ShmCollective({ ...opts, timeoutMs }, native);
    box.self = c;
    return c;
  }

  get closed(): boolean {
    return this.closedFlag;
  }
  /** The error that broke the group, if any (later calls reject with it). */
  get brokenBy(): ShoalError | undefined {
    return this.failure;
  }
  info(): { name: string; bytes: number; chunkBytes: number; buffers: number } {
    const i = this.native.info();
    return { name: i.name, bytes: i.bytes, chunkBytes: i.chunkBytes, buffers: i.nbuf };
  }
  stats(): { ops: number; bytes: number } {
    return { ...this.st };
  }

  /**
   * In place on `data`: every rank ends with op over all ranks (int32 'mean' truncates toward zero). Collective.
   *
   * `guard` (a uint32, default 0) must be the same on every rank: it travels in the op's descriptor (the field a
   * broadcast uses for its root) and is compared with the element count, dtype and op before anything is reduced,
   * so a caller can fold its own agreement check into the data op. A difference is ERR_MISMATCH on every rank,
   * `data` untouched and the group usable, like any mismatched call (`RingSync` folds its tensor-list signature
   * and NaN flag into its first gradient allreduce this way). The error's context has both calls (`MismatchedCalls`).
   */
  allreduce(data: NumericArray, op: CollectiveOp = 'sum', guard = 0): Promise<void> {
    const dt = dtypeCode(data);
    if (dt === 3) throw Errors.invalidArg('data', 'must be a Float32Array, Float64Array or Int32Array for allreduce');
    const code = OPS[op];
    if (code === undefined) throw Errors.invalidArg('op', `must be sum|mean|min|max, got ${String(op)}`);
    if (!(Number.isInteger(guard) && guard >= 0 && guard <= 0xffffffff)) throw Errors.invalidArg('guard', `must be an integer in [0, 2^32), got ${guard}`);
    return this.enqueue(KIND.allreduce, dt, code, data, guard);
  }

  /** Copy `root`'s `data` into every rank's `data` (same length and type everywhere). Collective. */
  broadcast(data: NumericArray | Uint8Array, root = 0): Promise<void> {
    const dt = dtypeCode(data);
    if (!Number.isInteger(root) || root < 0 || root >= this.size) throw Errors.invalidArg('root', `must be an integer in [0, ${this.size}), got ${root}`);
    return this.enqueue(KIND.broadcast, dt, 0, data, root);
  }

  /** Resolves once every rank has entered the barrier (an allreduce of nothing). Collective. */
  barrier(): Promise<void> {
    return this.enqueue(KIND.allreduce, 2, 0, null, 0);
  }

  private enqueue(kind: number, dt: number, op: number, data: NumericArray | Uint8Array | null, root: number): Promise<void> {
    if (this.closedFlag) return Promise.reject(Errors.closed('shm-collective'));
    if (this.failure) return Promise.reject(this.failure);
    if (!this.busy && this.queued === 0) {
      const now = this.launch(kind, dt, op, data, root);
      this.tail = now.catch(() => {});
      return now;
    }
    // Queued calls run in call order: each chains on the previous call's promise (`tail`), which only this
    // function moves.
    this.queued++;
    const go = () => {
      this.queued--;
      return this.launch(kind, dt, op, data, root);
    };
    const p = this.tail.then(go, go);
    this.tail = p.catch(() => {});
    return p;
  }

  private launch(kind: number, dt: number, op: number, data: NumericArray | Uint8Array | null, root: number): Promise<void> {
    if (this.closedFlag) return Promise.reject(Errors.closed('shm-collective'));
    if (this.failure) return Promise.reject(this.failure);
    const bytes = data?.byteLength ?? 0;
    const seq = (this.opSeq + 1) >>> 0;
    const syncSpin = bytes <= this.syncMaxBytes ? this.syncSpinMicros : 0;
    let r: number | [string, string];
    try {
      r = this.native.start(kind, dt, op, data, data?.length ?? 0, root, seq, this.timeoutMs, syncSpin, this.spinMicros);
    } catch (e) {
      // Not started on this rank (bad argument): its op number is not used, and the peers, which may have
      // started it, time out naming this rank.
      return Promise.reject(e);
    }
    this.opSeq = seq;
    this.st.ops++;
    this.st.bytes += bytes;
    if (r === 0) return Promise.resolve();
    if (typeof r !== 'number') return Promise.reject(this.toError(r[0], r[1]));
    this.busy = true;
    const d = deferred<void>();
    this.inflight = d;
    return d.promise;
  }

  private onDone(code: string, message: string): void {
    const d = this.inflight;
    this.inflight = undefined;
    this.busy = false;
    if (!d) return;
    if (code === '') d.resolve();
    else d.reject(this.toError(code, message));
  }

  private toError(code: string, message: string): ShoalError {
    let e: ShoalError;
    switch (code) {
      case 'ERR_MISMATCH':
        return Errors.mismatch('shm-collective', message, { rank: this.rank, ...parseMismatch(message) });
      case 'ERR_TIMEOUT':
        e = Errors.timeout(message, this.timeoutMs, { rank: this.rank });
        break;
      case 'ERR_CLOSED':
        e = Errors.closed('shm-collective');
        break;
      case 'ERR_PEER_CLOSED':
        e = Errors.peerClosed('shm-collective', message);
        break;
      default:
        e = Errors.transport('shm-collective', `${code}: ${message}`);
    }
    this.failure ??= e;
    return e;
  }

  /**
   * Leave the group: sets the segment's abort word (peers' pending and later ops fail with ERR_PEER_CLOSED; ops
   * they already completed are not affected), fails this rank's pending op with ERR_CLOSED, joins the native
   * thread and unmaps. Idempotent.
   */
  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    if (this.inflight) {
      this.native.abort(ABORT_CLOSED);
      await this.inflight.promise.catch(() => {});
    }
    this.native.close();
  }

  /** Mark the group broken for every rank (e.g. after an error outside the collective); pending ops fail. */
  abort(): void {
    if (!this.closedFlag) this.native.abort(ABORT_ERROR);
  }
}

/** One side of a mismatched call, as the native side describes it (the guard of an allreduce is not shown). */
export interface CallDescription {
  rank: number;
  kind: 'allreduce' | 'broadcast';
  count: number;
  dtype: string;
  /** The reduce op of an allreduce, `root N` of a broadcast. */
  op: string;
  opSeq: number;
}
/** Context of a mismatch ERR_MISMATCH: this rank's call and the first rank's whose call differs. */
export interface MismatchedCalls {
  mine: CallDescription;
  theirs: CallDescription;
}

const CALL = String.raw`rank (\d+) calls (allreduce|broadcast)\((\d+) x (\w+), ([^,]+), op #(\d+)\)`;
const MISMATCH_RE = new RegExp(`^${CALL}, ${CALL}$`);

/** The two calls of a native mismatch message (shmcoll.cc `checkDescs`), or nothing when it has another form. */
function parseMismatch(message: string): Partial<MismatchedCalls> {
  const m = MISMATCH_RE.exec(message);
  if (!m) return {};
  const call = (i: number): CallDescription => ({
    rank: Number(m[i]),
    kind: m[i + 1] as CallDescription['kind'],
    count: Number(m[i + 2]),
    dtype: m[i + 3]!,
    op: m[i + 4]!,
    opSeq: Number(m[i + 5]),
  });
  return { mine: call(1), theirs: call(7) };
}
