import { Errors, type NumericArray, type ProcessGroup, type ReduceKernels, type ReduceOp } from '@shoal/core';
import { HEADER_BYTES, Tags } from '@shoal/core/group';
import { allreduceDirect } from './allreduce-direct.js';
import { allreduceDoubling } from './allreduce-doubling.js';
import { bytesOf, copyBytes, dtypeOf, expectBytes, Outbox, partition, segments, sendBytes, viewAs, ZERO_COPY_BYTES, type OpTrace } from './common.js';

export type AllreduceOp = ReduceOp | 'mean';

/**
 * Two-rank exchange: segments each side sends ahead of the peer's. Bounds the received segments waiting to be
 * reduced, so their buffers cycle through the connection's receive pool (`ProcessGroup.release`) instead of being
 * allocated and page-faulted in afresh: 64 MiB over net on loopback went from ~6000 to ~200 page faults per call.
 */
const EXCHANGE_WINDOW = 16;

/**
 * The ring's (3+ ranks) segment size when `segmentBytes` is not given: a quarter of a chunk, within [1 MiB,
 * RING_AUTO_SEGMENT_MAX]. Fewer, larger segments cost less per byte: at n=4 over net on loopback, 64 MiB (16 MiB
 * chunks) took 289-298 ms of CPU per call summed over the ranks with 1 MiB segments, 246 with 2 MiB, 228-253
 * with 4 MiB and 227 with 8 MiB (user time 141-148 -> 82-94 ms; 4 processes on 2 cores, so CPU is the throughput).
 * Chunks of up to 4 MiB keep today's 1 MiB segments.
 */
export const RING_AUTO_SEGMENT_MAX = 4 << 20;
export function ringSegmentBytes(bytes: number, size: number): number {
  return Math.min(RING_AUTO_SEGMENT_MAX, Math.max(1 << 20, Math.ceil(bytes / size / 4)));
}

/**
 * The default small-buffer variant for `size` (3+) ranks: the one with fewer hops, recursive doubling (log2 p,
 * plus 2 to fold in the ranks above the largest power of two p <= size) or the ring variant (size - 1); the ring
 * on a tie. 'doubling' for 4 and from 6 ranks on, 'ring' for 3 and 5. Doubling also sends fewer messages per rank
 * (log2 p against size - 1). Across 4 namespace hosts at 1 Gbit/s (one rank each, all on 2 cores, load 3.4-9.2)
 * an 8 B call took 0.29-0.68x the ring's p50 by doubling in each of 7 runs (252-584 us against 451-1965 us; gloo
 * 786-2522 us), with 0.38-0.72x its main-thread CPU (bench/README.md, session 7).
 */
export function smallAlgorithmFor(size: number): 'ring' | 'doubling' {
  let p = 1;
  while (p * 2 <= size) p *= 2;
  const doublingHops = Math.log2(p) + (p === size ? 0 : 2);
  return doublingHops < size - 1 ? 'doubling' : 'ring';
}

/** `smallAlgorithm: 'direct'` applies up to this many ranks (a full mesh above costs too many connections). */
const SMALL_DIRECT_MAX_RANKS = 8;

export interface AllreduceOptions {
  /** Reduction kernels (`loadKernels()` from @shoal/core). */
  kernels: ReduceKernels;
  /** 'sum' (default), 'mean', 'min' or 'max'. int32 'mean' truncates toward zero. */
  op?: AllreduceOp;
  /**
   * Wire format. 'float16' (float32 data only) halves the bytes on the wire: every rank's contribution is
   * rounded to fp16 (relative error <= 2^-11 per value, |x| > 65504 overflows to Inf, |x| < 6e-8 flushes to
   * 0); partial sums are accumulated in float32 and the reduced chunk is rounded to fp16 once more before the
   * allgather, so all ranks end with identical values. Expect about 2^-10 relative error on a sum of same-sign
   * values (more under cancellation).
   */
  wire?: 'native' | 'float16';
  /**
   * Pipeline segment size in bytes of data: one segment is on the wire while the previous is reduced. Default
   * 1 MiB, except the ring of 3+ ranks on large buffers: `ringSegmentBytes` (a quarter of a chunk, at most 4 MiB).
   */
  segmentBytes?: number;
  /** Buffers of at most this many bytes use the one-phase small-message variant (default 16 KiB). */
  smallBytes?: number;
  /**
   * Small-message variant for 3+ ranks (default: `smallAlgorithmFor(size)`, the one with fewer hops):
   * 'ring' (the buffers travel round the ring, `size - 1` hops, over the two neighbour connections),
   * 'doubling' (`allreduce-doubling.ts`: recursive doubling, log2(size) hops and messages per rank, two more hops
   * when size is not a power of two; native wire only, float16 keeps 'ring'), or 'direct' (every rank sends its
   * buffer to every other at once: one hop, a connection per pair; at most 8 ranks, else 'ring'). On this 2-core
   * machine with 4 ranks 'direct' was slower (8 B p50 287-368 us against 197 us), each process handling 3 messages
   * per call instead of 1.
   */
  smallAlgorithm?: 'ring' | 'direct' | 'doubling';
  /**
   * Large-buffer algorithm for 3+ ranks: 'ring' (default) or 'direct' (`allreduce-direct.ts`: the same bytes in
   * 2 phases over a full mesh; float16 wire is ring-only).
   */
  algorithm?: 'ring' | 'direct';
  /** Two-rank exchange only: segments sent ahead of the peer's (a credit window; default 16). */
  window?: number;
  /** Record the stages (wait, reduce, send) on a timeline. */
  trace?: OpTrace;
}

/**
 * Ring allreduce (Baidu / Horovod / gloo `AllreduceRing`): reduce-scatter then allgather around the ring, in
 * place on `data` (owned by the caller, written with the result on every rank). Collective: every rank calls it
 * with the same length, dtype, op and wire format.
 *
 * The buffer is split into `size` chunks (lengths differ by at most one element, so any length works, 0
 * included) and each chunk into segments. Step t of 2(size-1) sends one chunk to the next rank and receives
 * one from the previous; each received segment is reduced (reduce-scatter) or stored (allgather) and forwarded
 * at once, so one segment is on the wire while the previous is reduced. Mean is applied to the owned chunk
 * after the reduce-scatter, so each rank scales only 1/size of the data.
 *
 * Buffers of at most `smallBytes` use a latency-bound variant, by default the one with fewer hops
 * (`smallAlgorithmFor`): recursive doubling (`allreduce-doubling.ts`), or an allgather of whole buffers round the
 * ring in size-1 steps (or, `smallAlgorithm: 'direct'`, each rank to every other at once) after which each rank
 * reduces the size contributions in rank order. Either way every rank ends with identical results.
 *
 * With two ranks the ring degenerates to a pairwise exchange: each rank sends its whole buffer (segmented) and
 * reduces the peer's segments into its own as they arrive: one step instead of two, the same bytes, and both
 * ranks compute a+b (commutative, so bit-identical).
 *
 * Bytes sent per rank: 2(size-1)/size * bytes (ring, and the size-2 exchange); (size-1) * bytes (small ring
 * variant); log2(p) * bytes (doubling, + bytes for a folded pair).
 */
export async function allreduceRing(g: ProcessGroup, data: NumericArray, opts: AllreduceOptions): Promise<void> {
  const op = opts.op ?? 'sum';
  const dtype = dtypeOf(data);
  const f16 = opts.wire === 'float16';
  if (f16 && dtype !== 'float32') throw Errors.invalidArg('options.wire', `'float16' needs float32 data, got ${dtype}`);
  if (!['sum', 'mean', 'min', 'max'].includes(op)) throw Errors.invalidArg('options.op', `must be sum|mean|min|max, got ${String(op)}`);
  const segBytes = opts.segmentBytes ?? 1 << 20;
  if (!(segBytes >= 8)) throw Errors.invalidArg('options.segmentBytes', `must be >= 8, got ${segBytes}`);
  return g.run('allreduce', async (seq) => {
    if (g.size === 1) {
      if (f16) roundF16(opts.kernels, data as Float32Array);
      return;
    }
    const tr = opts.trace;
    if (g.size === 2) {
      await exchange(g, seq, data, op, f16, segBytes, opts.kernels, opts.window ?? EXCHANGE_WINDOW, tr);
      return;
    }
    if (data.byteLength <= (opts.smallBytes ?? 16384)) {
      const algorithm = opts.smallAlgorithm ?? smallAlgorithmFor(g.size);
      if (algorithm === 'doubling' && !f16) return allreduceDoubling(g, seq, data, op, opts.kernels, tr);
      const direct = algorithm === 'direct' && g.size <= SMALL_DIRECT_MAX_RANKS;
      return direct ? smallDirect(g, seq, data, op, f16, opts.kernels, tr) : small(g, seq, data, op, f16, opts.kernels, tr);
    }
    if (opts.algorithm === 'direct' && !f16) return allreduceDirect(g, seq, data, op, segBytes, opts.kernels);
    return ring(g, seq, data, op, f16, opts.segmentBytes ?? ringSegmentBytes(data.byteLength, g.size), opts.kernels, tr);
  });
}

/** Step number of `allreduceGuarded`'s lead message (no data step uses it). */
const LEAD_STEP = 0xffff;
/** Lead payload: u32 element count | u32 elements per segment | u32 window. */
const LEAD_BYTES = 12;

/**
 * `allreduceRing` on two ranks (or one) with an agreement check folded in: RingSync's first gradient allreduce of
 * a call on a 2-rank transport group, instead of a control round before it. Ahead of its segments each rank sends
 * a lead: `guard` (a uint32) in the header's aux, and its element count, segment size and window; it reads the
 * peer's lead before it reduces anything.
 *   - Equal leads: the exchange runs as `allreduceRing`'s, with no extra round trip (the lead travels just ahead
 *     of the segments, 28 bytes), and the result is true.
 *   - A difference: each rank drains the segments the peer sent ahead (its lead says how many), leaves `data`
 *     untouched and resolves false; both ranks see the same two leads, so both do, and the group stays usable.
 * Native wire only (float16 rounds `data` as it sends). 3+ ranks: not supported (a ring rank sees only its
 * predecessor's lead); use a control round.
 */
export async function allreduceGuarded(g: ProcessGroup, data: NumericArray, opts: AllreduceOptions & { guard: number }): Promise<boolean> {
  const op = opts.op ?? 'sum';
  dtypeOf(data);
  if (g.size > 2) throw Errors.invalidArg('group', `allreduceGuarded takes 1 or 2 ranks, got ${g.size}`);
  if (opts.wire === 'float16') throw Errors.invalidArg('options.wire', "allreduceGuarded takes the native wire only");
  if (!['sum', 'mean', 'min', 'max'].includes(op)) throw Errors.invalidArg('options.op', `must be sum|mean|min|max, got ${String(op)}`);
  if (!(Number.isInteger(opts.guard) && opts.guard >= 0 && opts.guard <= 0xffffffff)) throw Errors.invalidArg('options.guard', `must be an integer in [0, 2^32), got ${opts.guard}`);
  const segBytes = opts.segmentBytes ?? 1 << 20;
  if (!(segBytes >= 8)) throw Errors.invalidArg('options.segmentBytes', `must be >= 8, got ${segBytes}`);
  if (g.size === 1) return true;
  return g.run('allreduce', (seq) => exchange(g, seq, data, op, false, segBytes, opts.kernels, opts.window ?? EXCHANGE_WINDOW, opts.trace, opts.guard));
}

function roundF16(k: ReduceKernels, a: Float32Array): void {
  const h = new Uint16Array(a.length);
  k.f32ToF16(h, a);
  k.f16ToF32(a, h);
}

function finishMean(k: ReduceKernels, a: NumericArray, size: number): void {
  if (a instanceof Int32Array) for (let i = 0; i < a.length; i++) a[i] = Math.trunc(a[i]! / size);
  else k.scale(a, 1 / size);
}

/** A receive, recorded as a `wait` span when tracing. */
function recvTraced(g: ProcessGroup, from: number, h: Parameters<ProcessGroup['recv']>[1], tr: OpTrace | undefined) {
  if (!tr) return g.recv(from, h);
  return tr.timeline.trace(tr.lane, 'wait', () => g.recv(from, h), { from });
}

async function ring(g: ProcessGroup, seq: number, data: NumericArray, op: AllreduceOp, f16: boolean, segBytes: number, k: ReduceKernels, tr?: OpTrace): Promise<void> {
  const size = g.size;
  const r = g.rank;
  const n = data.length;
  const es = data.BYTES_PER_ELEMENT;
  const wes = f16 ? 2 : es;
  const segElems = Math.max(1, Math.floor(segBytes / es));
  const chunks = partition(n, size);
  const segsOf = chunks.map((c) => segments(c.start, c.len, segElems));
  const rop: ReduceOp = op === 'mean' ? 'sum' : op;
  const steps = 2 * (size - 1);
  const out = new Outbox(g, tr);
  const mod = (x: number) => ((x % size) + size) % size;
  const aux = n >>> 0;
  const u16 = new Uint16Array(0);

  // zero-copy sends of `data` segments, by segment start: a segment is overwritten only after its send is done
  const inflight = new Map<number, Promise<void>>();
  const sendSeg = (step: number, s: { start: number; len: number }, received?: Uint8Array) => {
    const h = { tag: Tags.allreduce, step, seq, aux };
    if (f16 && !received) {
      const msg = g.message(h, s.len * 2);
      // header is 16 bytes, so the payload is 2-byte aligned in its own ArrayBuffer
      k.f32ToF16(new Uint16Array(msg.buffer, msg.byteOffset + 16, s.len), data.subarray(s.start, s.start + s.len) as Float32Array);
      out.add(g.sendMessage(g.next, msg));
    } else if (received) {
      sendBytes(g, out, g.next, h, received); // allgather: forward what arrived, untouched
    } else {
      inflight.set(s.start, sendBytes(g, out, g.next, h, bytesOf(data, s.start, s.len)));
    }
  };

  try {
    for (const s of segsOf[r]!) sendSeg(0, s);
    for (let t = 0; t < steps; t++) {
      const rc = t < size - 1 ? mod(r - t - 1) : mod(r - (t - (size - 1)));
      const reducing = t < size - 1;
      const lastReduce = t === size - 2;
      const h = { tag: Tags.allreduce, step: t, seq, aux };
      const segs = segsOf[rc]!;
      // allgather: post every segment's receive at once, straight into `data` (the kernel writes the result where it
      // belongs: no copy), once our own sends from those segments are done
      let posted: Promise<Uint8Array>[] | undefined;
      let dsts: Uint8Array[] = [];
      if (!reducing && !f16 && segs.some((s) => s.len * es >= ZERO_COPY_BYTES)) {
        await Promise.all(segs.map((s) => inflight.get(s.start)));
        dsts = segs.map((s) => bytesOf(data, s.start, s.len));
        // in message order; only the last segment can be short enough to travel inline (see `sendBytes`)
        posted = segs.map((s, j) => (s.len * es >= ZERO_COPY_BYTES ? g.recvRefInto(g.prev, h, dsts[j]!) : g.recv(g.prev, h).then((m) => m.payload)));
        for (const p of posted) p.catch(() => {});
      }
      for (let j = 0; j < segs.length; j++) {
        const s = segs[j]!;
        if (posted) {
          const pj = posted[j]!;
          const payload = await (tr ? tr.timeline.trace(tr.lane, 'wait', () => pj, { from: g.prev }) : pj);
          expectBytes(g, g.prev, 'allreduce segment', payload.byteLength, s.len * es);
          const dst = dsts[j]!;
          if (payload !== dst) {
            dst.set(payload);
            g.release(g.prev, payload);
          }
          if (t + 1 < steps) sendSeg(t + 1, s);
          continue;
        }
        const { payload } = await recvTraced(g, g.prev, h, tr);
        expectBytes(g, g.prev, 'allreduce segment', payload.byteLength, s.len * wes);
        const dst = data.subarray(s.start, s.start + s.len);
        if (reducing) {
          const r0 = tr?.timeline.now();
          if (f16) k.reduceF16(rop, dst as Float32Array, viewAs(u16, payload, s.len));
          else k.reduce(rop, dst, viewAs(data, payload, s.len));
          if (tr) tr.timeline.span(tr.lane, 'reduce', r0!, { step: t });
          g.release(g.prev, payload);
          if (lastReduce) {
            // this rank owns chunk rc now: finish it once, here, before it circulates
            if (op === 'mean') finishMean(k, dst, size);
            if (f16) roundF16(k, dst as Float32Array);
          }
          if (t + 1 < steps) sendSeg(t + 1, s);
        } else if (f16) {
          if (t + 1 < steps) sendSeg(t + 1, s, payload);
          const pending = inflight.get(s.start);
          if (pending) await pending;
          k.f16ToF32(dst as Float32Array, viewAs(u16, payload, s.len));
        } else {
          // store, then forward from `data` (final now: it changes no more), so the received buffer goes back at once
          const pending = inflight.get(s.start);
          if (pending) await pending;
          dst.set(viewAs(data, payload, s.len) as never);
          g.release(g.prev, payload);
          if (t + 1 < steps) sendSeg(t + 1, s);
        }
      }
    }
  } catch (e) {
    out.rethrow(e);
  }
  await out.flush();
}

/** This rank's contribution to a small allreduce, in its own buffer (fp16 on the float16 wire). */
function ownPart(data: NumericArray, f16: boolean, k: ReduceKernels): Uint8Array {
  if (!f16) return copyBytes(bytesOf(data));
  const h = new Uint16Array(data.length);
  k.f32ToF16(h, data as Float32Array);
  return new Uint8Array(h.buffer);
}

async function small(g: ProcessGroup, seq: number, data: NumericArray, op: AllreduceOp, f16: boolean, k: ReduceKernels, tr?: OpTrace): Promise<void> {
  const size = g.size;
  const n = data.length;
  const wes = f16 ? 2 : data.BYTES_PER_ELEMENT;
  const aux = n >>> 0;
  const parts: Uint8Array[] = new Array(size);
  const mine = ownPart(data, f16, k);
  parts[g.rank] = mine;
  const out = new Outbox(g, tr);
  try {
    out.add(g.send(g.next, { tag: Tags.allreduce, step: 0, seq, aux }, mine));
    for (let t = 0; t < size - 1; t++) {
      const from = (g.rank - t - 1 + size) % size;
      const { payload } = await recvTraced(g, g.prev, { tag: Tags.allreduce, step: t, seq, aux }, tr);
      expectBytes(g, g.prev, 'allreduce buffer', payload.byteLength, n * wes);
      parts[from] = payload;
      if (t + 1 < size - 1) out.add(g.send(g.next, { tag: Tags.allreduce, step: t + 1, seq, aux }, payload));
    }
  } catch (e) {
    out.rethrow(e);
  }
  await out.flush();
  reduceParts(data, parts, op, f16, k, tr);
}

/**
 * Small buffers on a full mesh: every rank sends its buffer to each peer at once and receives theirs, then reduces
 * as `small` does. One hop of latency instead of `size - 1`; the same `(size-1) * N` bytes sent per rank.
 */
async function smallDirect(g: ProcessGroup, seq: number, data: NumericArray, op: AllreduceOp, f16: boolean, k: ReduceKernels, tr?: OpTrace): Promise<void> {
  const size = g.size;
  const n = data.length;
  const wes = f16 ? 2 : data.BYTES_PER_ELEMENT;
  const h = { tag: Tags.allreduce, step: 0, seq, aux: n >>> 0 };
  const parts: Uint8Array[] = new Array(size);
  const mine = ownPart(data, f16, k);
  parts[g.rank] = mine;
  const out = new Outbox(g, tr);
  try {
    for (let d = 1; d < size; d++) out.add(g.send((g.rank + d) % size, h, mine));
    await Promise.all(
      Array.from({ length: size - 1 }, async (_, i) => {
        const from = (g.rank - i - 1 + size) % size;
        const { payload } = await recvTraced(g, from, h, tr);
        expectBytes(g, from, 'allreduce buffer', payload.byteLength, n * wes);
        parts[from] = payload;
      }),
    );
  } catch (e) {
    out.rethrow(e);
  }
  await out.flush();
  reduceParts(data, parts, op, f16, k, tr);
}

/** Reduce every rank's buffer into `data` in rank order, so every rank computes bit-identical results. */
function reduceParts(data: NumericArray, parts: Uint8Array[], op: AllreduceOp, f16: boolean, k: ReduceKernels, tr?: OpTrace): void {
  const size = parts.length;
  const n = data.length;
  const r0 = tr?.timeline.now();
  const rop: ReduceOp = op === 'mean' ? 'sum' : op;
  if (f16) {
    const acc = data as Float32Array;
    k.f16ToF32(acc, viewAs(new Uint16Array(0), parts[0]!, n));
    for (let i = 1; i < size; i++) k.reduceF16(rop, acc, viewAs(new Uint16Array(0), parts[i]!, n));
  } else {
    data.set(viewAs(data, parts[0]!, n) as never);
    for (let i = 1; i < size; i++) k.reduce(rop, data, viewAs(data, parts[i]!, n));
  }
  if (op === 'mean') finishMean(k, data, size);
  if (f16) roundF16(k, data as Float32Array);
  if (tr) tr.timeline.span(tr.lane, 'reduce', r0!);
}

/** The two-rank exchange; with `guard`, led by `allreduceGuarded`'s lead: false when the leads differ. */
async function exchange(g: ProcessGroup, seq: number, data: NumericArray, op: AllreduceOp, f16: boolean, segBytes: number, k: ReduceKernels, window: number, tr?: OpTrace, guard?: number): Promise<boolean> {
  const n = data.length;
  const segElems = Math.max(1, Math.floor(segBytes / data.BYTES_PER_ELEMENT));
  const segs = segments(0, n, segElems);
  const h = { tag: Tags.allreduce, step: 0, seq, aux: n >>> 0 };
  const rop: ReduceOp = op === 'mean' ? 'sum' : op;
  const peer = g.next;
  const out = new Outbox(g, tr);
  const u16 = new Uint16Array(0);
  const inflight: Promise<void>[] = [];
  const sendSeg = (j: number) => {
    const s = segs[j]!;
    if (f16) {
      const msg = g.message(h, s.len * 2);
      const half = new Uint16Array(msg.buffer, msg.byteOffset + 16, s.len);
      const mine = data.subarray(s.start, s.start + s.len) as Float32Array;
      k.f32ToF16(half, mine);
      k.f16ToF32(mine, half); // reduce the same rounded values the peer receives
      out.add(g.sendMessage(peer, msg));
    } else inflight[j] = sendBytes(g, out, peer, h, bytesOf(data, s.start, s.len));
  };
  try {
    // credit window: segment j+window goes out once the peer's segment j is in, so each segment is reduced
    // while it is still in cache and neither side buffers the whole message
    if (guard !== undefined) {
      const lead = g.message({ tag: Tags.allreduce, step: LEAD_STEP, seq, aux: guard }, LEAD_BYTES);
      const dv = new DataView(lead.buffer, lead.byteOffset + HEADER_BYTES, LEAD_BYTES);
      dv.setUint32(0, n, true);
      dv.setUint32(4, segElems, true);
      dv.setUint32(8, window, true);
      out.add(g.sendMessage(peer, lead));
    }
    const first = Math.min(segs.length, window);
    for (let j = 0; j < first; j++) sendSeg(j);
    if (guard !== undefined && !(await leadsAgree(g, seq, peer, guard, n, segElems, window, tr))) {
      await out.flush();
      return false;
    }
    for (let j = 0; j < segs.length; j++) {
      const s = segs[j]!;
      const { payload } = await recvTraced(g, peer, h, tr);
      if (j + window < segs.length) sendSeg(j + window);
      const pending = inflight[j];
      if (pending) await pending; // our copy of this segment may still be on its way out
      expectBytes(g, peer, 'allreduce segment', payload.byteLength, s.len * (f16 ? 2 : data.BYTES_PER_ELEMENT));
      const r0 = tr?.timeline.now();
      const dst = data.subarray(s.start, s.start + s.len);
      if (f16) k.reduceF16(rop, dst as Float32Array, viewAs(u16, payload, s.len));
      else k.reduce(rop, dst, viewAs(data, payload, s.len));
      g.release(peer, payload);
      if (op === 'mean') finishMean(k, dst, 2);
      if (f16) roundF16(k, dst as Float32Array);
      if (tr) tr.timeline.span(tr.lane, 'reduce', r0!, { segment: j });
    }
  } catch (e) {
    out.rethrow(e);
  }
  await out.flush();
  return true;
}

/**
 * Read the peer's lead (`allreduceGuarded`); when it differs from ours, drain the segments the peer sent ahead of
 * reading ours (the first `window` of its own count, as its lead gives them) and say false.
 */
async function leadsAgree(g: ProcessGroup, seq: number, peer: number, guard: number, n: number, segElems: number, window: number, tr: OpTrace | undefined): Promise<boolean> {
  const { payload, header } = await recvTraced(g, peer, { tag: Tags.allreduce, step: LEAD_STEP, seq }, tr);
  expectBytes(g, peer, 'allreduce lead', payload.byteLength, LEAD_BYTES);
  const dv = new DataView(payload.buffer, payload.byteOffset, LEAD_BYTES);
  const pn = dv.getUint32(0, true);
  const pseg = dv.getUint32(4, true);
  const pwin = dv.getUint32(8, true);
  if (header.aux === guard >>> 0 && pn === n && pseg === segElems && pwin === window) return true;
  if (pseg < 1 || pwin < 1) throw Errors.badFrame(`rank ${g.rank}: allreduce lead from rank ${peer}`, `segment of ${pseg} elements, window ${pwin}`);
  const ahead = Math.min(Math.ceil(pn / pseg), pwin);
  for (let j = 0; j < ahead; j++) {
    const m = await g.recv(peer, { tag: Tags.allreduce, step: 0, seq, aux: pn });
    g.release(peer, m.payload);
  }
  return false;
}
