import { connectGroup, Errors, isShoalError, loadKernels, type NumericArray, type ProcessGroup, type ProcessGroupOptions, type ReduceKernels } from '@shoal/core';
import { HEADER_BYTES } from '@shoal/core/group';
import type { Timeline } from '@shoal/core/telemetry';
import { type MismatchedCalls, type ShmCollective } from '../shm/shm-collective.js';
import type { DenseTensor, GradientSync, RowSparseTensor } from '../api.js';
import { allreduceHierarchical, hierarchyHelps, type HierarchicalGroup } from './allreduce-hierarchical.js';
import { allreduceGuarded, allreduceRing, RING_AUTO_SEGMENT_MAX, type AllreduceOptions } from './allreduce-ring.js';
import { allgatherBytes } from './allgather.js';
import { barrierRing } from './barrier.js';
import { broadcastRing } from './broadcast.js';
import { copyBytes, type OpTrace } from './common.js';
import { checkShapes, describeMismatch, signatureOf, TensorFusion, type TensorListSignature } from './fusion.js';
import { mergeRows } from '../row-sparse.js';
import { traceIf } from '@shoal/core/telemetry';

export interface RingSyncOptions {
  /** Reduction kernels; default `loadKernels()` (native when built, else JS). */
  kernels?: ReduceKernels;
  /** Fusion buffer size in bytes (default 64 MiB). */
  fusionThresholdBytes?: number;
  /** Gradient wire format: 'native' float32 (default) or 'float16' compression (see AllreduceOptions.wire). */
  wire?: 'native' | 'float16';
  /** Pipeline segment size of the collectives in bytes (default 1 MiB). */
  segmentBytes?: number;
  /** Skip the NaN/Inf check of gradients. */
  allowNonFinite?: boolean;
  /** Large-buffer allreduce for 3+ ranks: 'ring' (default) or 'direct' (see AllreduceOptions.algorithm). */
  algorithm?: 'ring' | 'direct';
  /**
   * Route of the dense-gradient allreduce (the fused buffers of `allreduceMean`):
   *   - 'flat': the ring over `group`;
   *   - 'hierarchical': `allreduceHierarchical` over `hierarchical` (required): ring inside each host, ring
   *     across host leaders, broadcast inside each host;
   *   - 'auto' (default): hierarchical when `hierarchical` is given and `hierarchyHelps` its placement (more
   *     than one host and some host with several ranks), else flat.
   * The control allreduce, scalars, broadcast, sparse and barrier always use `group`. With the hierarchical
   * route `algorithm` is unused and `wire` applies to the cross-host stage only.
   */
  topology?: 'flat' | 'hierarchical' | 'auto';
  /**
   * A connected HierarchicalGroup over the same ranks as `group` (`connectHierarchical`). The RingSync owns it
   * from construction on, whatever route is chosen (close() closes it).
   */
  hierarchical?: HierarchicalGroup;
  /**
   * A connected ShmCollective over the same ranks as `group`, all on one host (`ShmCollective.connect`; initWorker
   * builds it when every rank is on one host). When given, the dense allreduce (with `wire` 'native'), the control
   * allreduce, `allreduceScalars`, `broadcastParameters` and `barrier` run on the shared segment instead of the
   * transport; sparse allgathers stay on `group`. Owned from construction on (close() closes it).
   */
  collective?: ShmCollective;
  /**
   * Record each op on this rank's timeline (lane `sync`): `negotiate` (the control allreduce; on the shared
   * segment and on 2 ranks only when the guarded first allreduce found a mismatch or a NaN), then per fusion
   * bucket `pack`, `allreduce` (args: bucket, tensors, bytes, route) and `unpack`; on the ring route inside it
   * `wait` (a receive) and `reduce` (a kernel), and each send on lane `sync sends`; on the hierarchical route
   * `local reduce`, `cross allreduce` (with the ring's stages) and `local broadcast`. Not owned.
   */
  timeline?: Timeline;
}

/**
 * The ring engine of GradientSync: dense gradients are fused and reduced with the ring allreduce, parameters
 * broadcast from rank 0, sparse gradients allgathered and merged. Every call is collective.
 *
 * Agreement before data: each `allreduceMean`/`broadcastParameters` first runs a 48-byte control allreduce
 * (max of [h1, h2, -h1, -h2, firstNonFinite+1]) so that all ranks learn, in one small collective, whether
 * their tensor lists agree (name, shape, dtype, length, count) and whether any rank holds a NaN/Inf, and raise
 * the same ERR_MISMATCH / ERR_NAN (naming the tensor) on every rank instead of hanging. These agreed errors
 * leave the group usable. On the shared segment (`sameHost` 'shm-collective') and on a 2-rank group
 * `allreduceMean` folds that check into its first gradient allreduce instead (`reduceGuarded`): no control
 * round unless something is wrong.
 */
/** Segment size of the collectives when `segmentBytes` is not given (broadcastRing's, allgatherBytes', the 2-rank exchange's). */
const DEFAULT_SEGMENT_BYTES = 1 << 20;
/** allreduceRing sends buffers up to this size whole (its `smallBytes` default). */
const SMALL_BYTES = 16384;

export class RingSync implements GradientSync {
  readonly kind = 'ring' as const;
  readonly capabilities = { rowSparse: 'allgather', concurrentCollectives: false } as const;
  readonly rank: number;
  readonly size: number;
  private readonly kernels: ReduceKernels;
  private readonly fusion: TensorFusion;
  private readonly wire: 'native' | 'float16';
  private readonly segmentBytes: number | undefined;
  private readonly allowNonFinite: boolean;
  private readonly algorithm: 'ring' | 'direct';
  /** Owned; the route of dense gradients when `dense` is set. */
  private readonly hier: HierarchicalGroup | undefined;
  private readonly denseHier: boolean;
  /** Owned; same-host shared-segment collective (see RingSyncOptions.collective). */
  private readonly coll: ShmCollective | undefined;
  /** Set when tracing: the timeline and its lanes. */
  private readonly trace: OpTrace | undefined;

  /** Wrap a connected group; the RingSync owns it from now on (close() closes it). */
  constructor(
    readonly group: ProcessGroup,
    opts: RingSyncOptions = {},
  ) {
    this.rank = group.rank;
    this.size = group.size;
    this.kernels = opts.kernels ?? loadKernels();
    this.fusion = new TensorFusion(opts.fusionThresholdBytes);
    this.wire = opts.wire ?? 'native';
    this.segmentBytes = opts.segmentBytes;
    this.allowNonFinite = opts.allowNonFinite ?? false;
    this.algorithm = opts.algorithm ?? 'ring';
    const topology = opts.topology ?? 'auto';
    if (!['flat', 'hierarchical', 'auto'].includes(topology)) throw Errors.invalidArg('options.topology', `must be flat|hierarchical|auto, got ${String(topology)}`);
    const h = opts.hierarchical;
    if (h !== undefined && (h.rank !== group.rank || h.size !== group.size))
      throw Errors.invalidArg('options.hierarchical', `is rank ${h.rank} of ${h.size} but the group is rank ${group.rank} of ${group.size}`);
    if (topology === 'hierarchical' && h === undefined) throw Errors.invalidArg('options.hierarchical', "is required with topology 'hierarchical'");
    const c = opts.collective;
    if (c !== undefined && (c.rank !== group.rank || c.size !== group.size))
      throw Errors.invalidArg('options.collective', `is rank ${c.rank} of ${c.size} but the group is rank ${group.rank} of ${group.size}`);
    this.coll = c;
    this.hier = h;
    // Every collective of this group sends messages of at most one segment (allgatherBytes included), or the
    // small-buffer path's 16 KiB, plus the group's header and allgather's 8-byte prefix: nothing else can come
    // from a peer, so a frame announcing more fails at once, naming the peer, before anything is reserved for it.
    // The hierarchical groups carry only the dense allreduce's ring stages and broadcast, in the same segments.
    // Without `segmentBytes` a ring of 3+ ranks picks up to RING_AUTO_SEGMENT_MAX by buffer size, so each group's
    // bound follows its own size.
    const limit = (g: ProcessGroup, where: string): void => {
      const seg = opts.segmentBytes ?? (g.size >= 3 ? RING_AUTO_SEGMENT_MAX : DEFAULT_SEGMENT_BYTES);
      g.limitIncoming(Math.max(seg, SMALL_BYTES) + HEADER_BYTES + 8, `the ring's segment size (segmentBytes ${opts.segmentBytes ?? `default, up to ${seg}`}${where})`);
    };
    limit(group, '');
    if (h) limit(h.local, ', within host');
    if (h?.cross) limit(h.cross, ', across hosts');
    const tl = opts.timeline;
    this.trace = tl ? { timeline: tl, lane: tl.lane('sync'), sends: tl.lane('sync sends') } : undefined;
    this.denseHier = h !== undefined && (topology === 'hierarchical' || (topology === 'auto' && hierarchyHelps(h.hostOf)));
  }

  /** 'hierarchical' when dense gradients go through the hierarchical allreduce, else 'flat'. */
  get topology(): 'flat' | 'hierarchical' {
    return this.denseHier ? 'hierarchical' : 'flat';
  }

  /** 'shm-collective' when the dense allreduce runs on a same-host shared segment, else 'transport'. */
  get sameHost(): 'shm-collective' | 'transport' {
    return this.coll !== undefined && this.wire === 'native' && !this.denseHier ? 'shm-collective' : 'transport';
  }

  /** The dense-gradient allreduce (mean, in place) on the chosen route. */
  private reduceDense(data: NumericArray, o: AllreduceOptions): Promise<void> {
    if (this.coll !== undefined && this.wire === 'native' && !this.denseHier) return this.coll.allreduce(data, 'mean');
    if (this.denseHier) return allreduceHierarchical(this.hier!, data, { kernels: o.kernels, op: 'mean', wire: o.wire, segmentBytes: o.segmentBytes, ...(o.trace ? { trace: o.trace } : {}) });
    return allreduceRing(this.group, data, o);
  }

  /** `reduceDense` of fusion bucket `i`, as an `allreduce` span when tracing. */
  private reduceBucket(data: NumericArray, o: AllreduceOptions, i: number, tensors: number): Promise<void> {
    const tr = this.trace;
    if (!tr) return this.reduceDense(data, o);
    const route = this.coll !== undefined && this.wire === 'native' && !this.denseHier ? 'shm-collective' : this.denseHier ? 'hierarchical' : 'ring';
    return tr.timeline.trace(tr.lane, 'allreduce', () => this.reduceDense(data, o), { bucket: i, tensors, bytes: data.byteLength, route });
  }

  /** `fn` as a span named `name` on the sync lane when tracing. */
  private traced<T>(name: string, fn: () => Promise<T>): Promise<T> {
    const tr = this.trace;
    return traceIf(tr, name, fn);
  }

  /** Connect a process group (`connectGroup`) and wrap it. */
  static async connect(group: ProcessGroupOptions, opts: RingSyncOptions = {}): Promise<RingSync> {
    return new RingSync(await connectGroup(group), opts);
  }

  /** The first tensor holding a NaN/Inf on this rank, or -1. */
  private firstNonFiniteTensor(tensors: readonly DenseTensor[]): number {
    for (let i = 0; i < tensors.length; i++) if (this.kernels.firstNonFinite(tensors[i]!.data) >= 0) return i;
    return -1;
  }

  /** The control collective: agree on the tensor list and on the first non-finite tensor. */
  private async agree(what: string, tensors: readonly DenseTensor[], checkFinite: boolean): Promise<TensorListSignature> {
    const sig = signatureOf(tensors);
    await this.agreeOn(what, tensors, sig, checkFinite ? this.firstNonFiniteTensor(tensors) : -1);
    return sig;
  }

  /**
   * The control allreduce of `sig` and `bad` (this rank's first non-finite tensor, -1 for none): throws the
   * ERR_MISMATCH naming the first differing tensor, or ERR_NAN naming the last of the ranks' first non-finite
   * tensors, alike on every rank; returns when the ranks agree and no rank saw a NaN/Inf.
   */
  private async agreeOn(what: string, tensors: readonly DenseTensor[], sig: TensorListSignature, bad: number): Promise<void> {
    const ctl = new Float64Array([sig.hash[0], sig.hash[1], -sig.hash[0], -sig.hash[1], bad + 1, 0]);
    if (this.coll !== undefined) await this.coll.allreduce(ctl, 'max');
    else await allreduceRing(this.group, ctl, { kernels: this.kernels, op: 'max' });
    if (ctl[0] !== -ctl[2] || ctl[1] !== -ctl[3]) {
      const enc = new TextEncoder().encode(JSON.stringify(sig.lines));
      const all = await allgatherBytes(this.group, enc, { segmentBytes: this.segmentBytes });
      throw describeMismatch(what, all.map((b) => JSON.parse(new TextDecoder().decode(b)) as string[]));
    }
    checkShapes(tensors);
    const nan = ctl[4]! - 1;
    if (nan >= 0) throw Errors.nan(`gradient "${tensors[nan]!.name}" (tensor #${nan}, on at least one rank)`, { tensor: tensors[nan]!.name, index: nan });
  }

  /**
   * Where `allreduceMean` folds the agreement into its first gradient allreduce (`reduceGuarded`) instead of a
   * control round before the data: 'shm' on the shared segment, 'pair' on a 2-rank transport group (flat route,
   * native wire: `allreduceGuarded`); undefined elsewhere (a ring of 3+ ranks, the hierarchical route, float16).
   */
  private get folded(): 'shm' | 'pair' | undefined {
    if (this.sameHost === 'shm-collective') return 'shm';
    if (this.size === 2 && this.coll === undefined && !this.denseHier && this.wire === 'native') return 'pair';
    return undefined;
  }

  /**
   * The first gradient allreduce of a call with the agreement folded in (no control round on the happy path):
   * it carries `guard`, the list's first hash, inverted when this rank holds a NaN/Inf, and the ranks compare
   * their guards and element counts before anything is reduced: on the shared segment in the op descriptor,
   * which the native side compares (ShmCollective.allreduce's `guard`); on a 2-rank group in the lead message
   * each rank sends ahead of its segments (`allreduceGuarded`). So:
   *   - every guard and count equal, and this rank saw no NaN: the lists agree (as far as a 32-bit hash tells)
   *     and no rank saw a NaN (one that did would have inverted its guard);
   *   - equal, and this rank saw a NaN: every rank did; the control round (`agreeOn`) then names the tensor as
   *     before;
   *   - a difference, with every rank in this same call: every rank learns it with `data` untouched (shared
   *     segment: ERR_MISMATCH; pair: false), and the control round then finds out which (a list mismatch, named
   *     by the allgathered descriptors, or a NaN);
   *   - another call on some rank (a collective-order mismatch): the same ERR_MISMATCH on every rank as before
   *     (the segment's mismatch, or the group's header check).
   * Only the error paths take the extra round. After a NaN every rank has reduced the first bucket already: a
   * bucket reduced in place (not packed) then holds the NaN-tainted mean; packed buckets are not unpacked.
   */
  private async reduceGuarded(what: string, tensors: readonly DenseTensor[], sig: TensorListSignature, bad: number, data: NumericArray, o: AllreduceOptions, bucket: number, count: number): Promise<void> {
    const guard = (bad >= 0 ? ~sig.hash[0] : sig.hash[0]) >>> 0;
    const coll = this.coll;
    const tr = this.trace;
    let mismatch: unknown;
    const op = async (): Promise<void> => {
      if (coll === undefined) {
        if (!(await allreduceGuarded(this.group, data, { ...o, guard })))
          mismatch = Errors.mismatch(what, `the ranks' leads differ but their tensor lists agree (different segmentBytes or window?)`, { rank: this.rank });
        return;
      }
      try {
        await coll.allreduce(data, 'mean', guard);
      } catch (e) {
        if (!sameCallMismatch(e)) throw e;
        mismatch = e;
      }
    };
    if (tr) await tr.timeline.trace(tr.lane, 'allreduce', op, { bucket, tensors: count, bytes: data.byteLength, route: coll ? 'shm-collective' : 'ring', guarded: true });
    else await op();
    if (mismatch !== undefined) {
      await this.traced('negotiate', () => this.agreeOn(what, tensors, sig, bad));
      throw mismatch; // the guards differed yet the lists hash alike and no rank saw a NaN: options differ (pair)
    }
    checkShapes(tensors);
    if (bad >= 0) await this.traced('negotiate', () => this.agreeOn(what, tensors, sig, bad));
  }

  private broadcast(data: NumericArray): Promise<void> {
    if (this.coll !== undefined) return this.coll.broadcast(data, 0);
    return broadcastRing(this.group, data, { root: 0, segmentBytes: this.segmentBytes });
  }

  async broadcastParameters(params: readonly DenseTensor[]): Promise<void> {
    const sig = await this.traced('negotiate', () => this.agree('broadcastParameters', params, false));
    for (const b of this.fusion.plan(params, sig)) {
      if (!b.packed) {
        await this.traced('broadcast', () => this.broadcast(params[b.tensors[0]!]!.data));
        continue;
      }
      const view = this.fusion.pack(params, b);
      await this.traced('broadcast', () => this.broadcast(view));
      this.fusion.unpack(params, b, view);
    }
  }

  async allreduceMean(grads: readonly DenseTensor[]): Promise<void> {
    const tr = this.trace;
    const what = 'allreduceMean';
    const sig = signatureOf(grads);
    const bad = this.allowNonFinite ? -1 : this.firstNonFiniteTensor(grads);
    // On the shared segment and on 2 ranks the agreement rides on the first bucket's allreduce (`reduceGuarded`);
    // elsewhere it is a control round of its own before the data.
    let guarded = this.folded !== undefined;
    if (!guarded) await this.traced('negotiate', () => this.agreeOn(what, grads, sig, bad));
    const o: AllreduceOptions = { kernels: this.kernels, op: 'mean' as const, wire: this.wire, segmentBytes: this.segmentBytes, algorithm: this.algorithm, ...(tr ? { trace: tr } : {}) };
    const reduce = (data: NumericArray, i: number, n: number): Promise<void> => {
      if (!guarded) return this.reduceBucket(data, o, i, n);
      guarded = false;
      return this.reduceGuarded(what, grads, sig, bad, data, o, i, n);
    };
    const plan = this.fusion.plan(grads, sig);
    if (plan.length === 0 && guarded) await reduce(new Float32Array(0), 0, 0);
    let i = 0;
    for (const b of plan) {
      const n = b.tensors.length;
      if (!b.packed) {
        await reduce(grads[b.tensors[0]!]!.data, i++, n);
        continue;
      }
      const direct = this.fusion.contiguous(grads, b);
      if (direct) {
        await reduce(direct, i++, n);
        continue;
      }
      const t0 = tr?.timeline.now();
      const view = this.fusion.pack(grads, b);
      if (tr) tr.timeline.span(tr.lane, 'pack', t0!, { bucket: i, bytes: view.byteLength });
      await reduce(view, i, n);
      const t1 = tr?.timeline.now();
      this.fusion.unpack(grads, b, view);
      if (tr) tr.timeline.span(tr.lane, 'unpack', t1!, { bucket: i, bytes: view.byteLength });
      i++;
    }
  }

  sparseAllreduceMean(grad: RowSparseTensor): Promise<RowSparseTensor> {
    const tr = this.trace;
    if (!tr) return this.sparseAllgatherMean(grad);
    return tr.timeline.trace(tr.lane, 'sparse allgather', () => this.sparseAllgatherMean(grad), { tensor: grad.name, rows: grad.rowIds.length });
  }

  private async sparseAllgatherMean(grad: RowSparseTensor): Promise<RowSparseTensor> {
    const parts = (await allgatherBytes(this.group, encodeSparse(grad), { segmentBytes: this.segmentBytes })).map((b, r) => decodeSparse(b, r));
    const ref = parts[0]!;
    for (const p of parts) {
      if (p.name !== ref.name || p.numRows !== ref.numRows || p.rowSize !== ref.rowSize)
        throw Errors.mismatch(
          'sparseAllreduceMean',
          `rank 0 sends "${ref.name}" [${ref.numRows}x${ref.rowSize}], rank ${p.rank} sends "${p.name}" [${p.numRows}x${p.rowSize}]`,
          { tensor: ref.name, rank: p.rank },
        );
    }
    const { numRows, rowSize, name } = ref;
    let total = 0;
    for (const p of parts) {
      if (p.rows.length !== p.rowIds.length * rowSize)
        throw Errors.data(`sparseAllreduceMean "${name}"`, `rank ${p.rank} sent ${p.rowIds.length} row ids but ${p.rows.length} values (rowSize ${rowSize})`);
      for (const id of p.rowIds)
        if (!(id >= 0 && id < numRows)) throw Errors.data(`sparseAllreduceMean "${name}"`, `rank ${p.rank} sent row id ${id} outside [0, ${numRows})`, { rank: p.rank });
      if (!this.allowNonFinite && this.kernels.firstNonFinite(p.rows) >= 0)
        throw Errors.nan(`sparse gradient "${name}" from rank ${p.rank}`, { tensor: name, rank: p.rank });
      total += p.rowIds.length;
    }
    // Concatenate every rank's rows in rank order, then one sort-and-sum (no per-row native call).
    const allIds = new Int32Array(total);
    const allRows = new Float32Array(total * rowSize);
    let o = 0;
    for (const p of parts) {
      allIds.set(p.rowIds, o);
      allRows.set(p.rows, o * rowSize);
      o += p.rowIds.length;
    }
    const { ids: rowIds, rows } = mergeRows(allIds, allRows, rowSize, numRows, `sparseAllreduceMean "${name}"`);
    this.kernels.scale(rows, 1 / this.size);
    return { name, numRows, rowSize, rowIds, rows };
  }

  async allreduceScalars(values: Float64Array): Promise<Float64Array> {
    const out = values.slice();
    const t0 = this.trace?.timeline.now();
    if (this.coll !== undefined) await this.coll.allreduce(out, 'mean');
    else await allreduceRing(this.group, out, { kernels: this.kernels, op: 'mean' });
    if (this.trace) this.trace.timeline.span(this.trace.lane, 'allreduce scalars', t0!, { values: values.length });
    return out;
  }

  barrier(): Promise<void> {
    return this.coll !== undefined ? this.coll.barrier() : barrierRing(this.group);
  }

  stats(): { bytesSent: number; bytesReceived: number; ops: number } {
    const s = this.group.stats();
    let { bytesSent, bytesReceived } = s;
    for (const g of [this.hier?.local, this.hier?.cross]) {
      if (g === undefined) continue;
      const t = g.stats();
      bytesSent += t.bytesSent;
      bytesReceived += t.bytesReceived;
    }
    // The shared segment: each op's payload counts once each way (copied in, and the result copied out).
    let ops = s.ops;
    for (const coll of [this.coll, this.hier?.collective]) {
      const c = coll?.stats();
      if (c === undefined) continue;
      bytesSent += c.bytes;
      bytesReceived += c.bytes;
      if (coll === this.coll) ops += c.ops;
    }
    return { bytesSent, bytesReceived, ops };
  }

  async close(): Promise<void> {
    await Promise.all([this.group.close(), this.hier?.close(), this.coll?.close()]);
  }
}

/**
 * True for the ERR_MISMATCH of a shared-segment call where the first differing rank is in the same call (a
 * float32 mean allreduce of the same op number): only its guard or element count differ.
 */
function sameCallMismatch(e: unknown): boolean {
  if (!isShoalError(e, 'ERR_MISMATCH')) return false;
  const c = e.context as Partial<MismatchedCalls>;
  const t = c.theirs;
  return c.mine !== undefined && t !== undefined && t.kind === 'allreduce' && t.dtype === 'float32' && t.op === 'mean' && t.opSeq === c.mine.opSeq;
}

interface SparsePart {
  rank: number;
  name: string;
  numRows: number;
  rowSize: number;
  rowIds: Int32Array;
  rows: Float32Array;
}

/** Wire form: u32 numRows | u32 rowSize | u32 count | u32 nameBytes | name (padded to 4) | i32 ids | f32 rows. */
function encodeSparse(t: RowSparseTensor): Uint8Array {
  const name = new TextEncoder().encode(t.name);
  const nameLen = (name.length + 3) & ~3;
  const buf = new Uint8Array(16 + nameLen + t.rowIds.byteLength + t.rows.byteLength);
  const dv = new DataView(buf.buffer);
  dv.setUint32(0, t.numRows, true);
  dv.setUint32(4, t.rowSize, true);
  dv.setUint32(8, t.rowIds.length, true);
  dv.setUint32(12, name.length, true);
  buf.set(name, 16);
  buf.set(new Uint8Array(t.rowIds.buffer, t.rowIds.byteOffset, t.rowIds.byteLength), 16 + nameLen);
  buf.set(new Uint8Array(t.rows.buffer, t.rows.byteOffset, t.rows.byteLength), 16 + nameLen + t.rowIds.byteLength);
  return buf;
}

function decodeSparse(b: Uint8Array, rank: number): SparsePart {
  const c = b.byteOffset % 4 === 0 ? b : copyBytes(b);
  if (c.byteLength < 16) throw Errors.badFrame(`sparse gradient from rank ${rank}`, `${c.byteLength} bytes`);
  const dv = new DataView(c.buffer, c.byteOffset, c.byteLength);
  const numRows = dv.getUint32(0, true);
  const rowSize = dv.getUint32(4, true);
  const count = dv.getUint32(8, true);
  const nameBytes = dv.getUint32(12, true);
  const nameLen = (nameBytes + 3) & ~3;
  const idsAt = 16 + nameLen;
  const rowsAt = idsAt + count * 4;
  const nvals = (c.byteLength - rowsAt) / 4;
  if (!(nvals >= 0) || !Number.isInteger(nvals)) throw Errors.badFrame(`sparse gradient from rank ${rank}`, `length ${c.byteLength} does not fit ${count} rows`);
  return {
    rank,
    name: new TextDecoder().decode(c.subarray(16, 16 + nameBytes)),
    numRows,
    rowSize,
    rowIds: new Int32Array(c.buffer, c.byteOffset + idsAt, count),
    rows: new Float32Array(c.buffer, c.byteOffset + rowsAt, nvals),
  };
}
