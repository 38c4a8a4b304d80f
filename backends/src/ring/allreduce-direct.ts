import type { NumericArray, ProcessGroup, ReduceKernels, ReduceOp } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { bytesOf, expectBytes, Outbox, partition, segments, sendBytes, viewAs } from './common.js';

/**
 * Direct (all-to-all) allreduce for few ranks on one host: the same reduce-scatter + allgather split and the
 * same bytes as the ring, 2(P-1)/P * N per rank, but in 2 phases instead of 2(P-1) steps:
 *
 *   1. reduce-scatter: rank r sends chunk j straight to rank j (all j != r at once) and reduces the P-1 copies of
 *      its own chunk r as they arrive, in rank order (r+1, r+2, ...) so the result does not depend on timing;
 *   2. allgather: rank r sends its reduced chunk to every other rank and stores the chunks it receives.
 *
 * It needs a connection to every peer (created on first use) and puts P-1 streams on each rank's link, so it
 * fits small P (the default chooses it only for 3 <= P <= 4); on an oversubscribed host it waits on 2 hand-offs
 * instead of a 2(P-1)-long chain of them. Segments of `segmentBytes` are pipelined per peer.
 * Called by `allreduceRing` (`algorithm: 'direct'`); the caller has checked the arguments and holds the group.
 */
export async function allreduceDirect(
  g: ProcessGroup,
  seq: number,
  data: NumericArray,
  op: ReduceOp | 'mean',
  segBytes: number,
  k: ReduceKernels,
): Promise<void> {
  const size = g.size;
  const r = g.rank;
  const n = data.length;
  const es = data.BYTES_PER_ELEMENT;
  const segElems = Math.max(1, Math.floor(segBytes / es));
  const chunks = partition(n, size);
  const segsOf = chunks.map((c) => segments(c.start, c.len, segElems));
  const rop: ReduceOp = op === 'mean' ? 'sum' : op;
  const aux = n >>> 0;
  const out = new Outbox(g);
  const peers = Array.from({ length: size - 1 }, (_, i) => (r + 1 + i) % size);
  await Promise.all(peers.map((p) => g.peer(p)));
  // phase 1 sends: chunk j to rank j, by reference; chunk j is overwritten in phase 2 only after this finished
  const inflight = new Map<number, Promise<void>[]>();
  try {
    for (const j of peers) {
      const ps: Promise<void>[] = [];
      for (const s of segsOf[j]!) ps.push(sendBytes(g, out, j, { tag: Tags.allreduce, step: 0, seq, aux }, bytesOf(data, s.start, s.len)));
      inflight.set(j, ps);
    }
    const mine = segsOf[r]!;
    for (const s of mine) {
      const dst = data.subarray(s.start, s.start + s.len);
      for (const j of peers) {
        const { payload } = await g.recv(j, { tag: Tags.allreduce, step: 0, seq, aux });
        expectBytes(g, j, 'allreduce segment', payload.byteLength, s.len * es);
        k.reduce(rop, dst, viewAs(data, payload, s.len));
      }
      if (op === 'mean') {
        if (dst instanceof Int32Array) for (let i = 0; i < dst.length; i++) dst[i] = Math.trunc(dst[i]! / size);
        else k.scale(dst, 1 / size);
      }
      for (const j of peers) sendBytes(g, out, j, { tag: Tags.allreduce, step: 1, seq, aux }, bytesOf(data, s.start, s.len));
    }
    for (const j of peers) {
      await Promise.all(inflight.get(j)!);
      for (const s of segsOf[j]!) {
        const { payload } = await g.recv(j, { tag: Tags.allreduce, step: 1, seq, aux });
        expectBytes(g, j, 'allreduce segment', payload.byteLength, s.len * es);
        data.set(viewAs(data, payload, s.len) as never, s.start);
      }
    }
  } catch (e) {
    out.rethrow(e);
  }
  await out.flush();
}
