import type { NumericArray, ProcessGroup, ReduceKernels, ReduceOp } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { bytesOf, copyBytes, expectBytes, Outbox, viewAs, type OpTrace } from './common.js';

/**
 * Recursive-doubling allreduce of a small buffer (MPICH's and gloo's latency-bound algorithm): log2(P) steps;
 * at step i rank r swaps its running result with rank r XOR 2^i and reduces the two. Every rank sends log2(P)
 * whole buffers and waits on log2(P) hops, against the ring variant's P-1 buffers and hops (4 ranks: 2 against 3).
 *
 * With P not a power of two, the p = 2^floor(log2 P) "core" ranks do the doubling; each extra rank p+j first
 * hands its buffer to rank j (one hop) and gets the result back at the end (one more).
 *
 * Results are bit-identical on every rank: each step combines the same two operands on both partners, and
 * sum, min and max of two values are commutative in IEEE arithmetic; `mean` divides the identical sum once.
 * Native wire only (float16 partial sums would round at every step; the caller keeps the ring variant for it).
 *
 * In place on `data`; called by `allreduceRing` (`smallAlgorithm: 'doubling'`), which holds the group and has
 * checked the arguments. Bytes sent per rank: log2(p) * N (+ N for a folded pair).
 */
export async function allreduceDoubling(g: ProcessGroup, seq: number, data: NumericArray, op: ReduceOp | 'mean', k: ReduceKernels, tr?: OpTrace): Promise<void> {
  const size = g.size;
  const r = g.rank;
  const n = data.length;
  const bytes = n * data.BYTES_PER_ELEMENT;
  const rop: ReduceOp = op === 'mean' ? 'sum' : op;
  let p = 1;
  while (p * 2 <= size) p *= 2;
  const steps = Math.log2(p);
  const h = (step: number) => ({ tag: Tags.allreduce, step, seq, aux: n >>> 0 });
  const out = new Outbox(g, tr);
  const recv = async (from: number, step: number): Promise<Uint8Array> => {
    const got = tr ? await tr.timeline.trace(tr.lane, 'wait', () => g.recv(from, h(step)), { from }) : await g.recv(from, h(step));
    expectBytes(g, from, 'allreduce buffer', got.payload.byteLength, bytes);
    return got.payload;
  };
  const reduceFrom = (from: number, payload: Uint8Array) => {
    const r0 = tr?.timeline.now();
    k.reduce(rop, data, viewAs(data, payload, n));
    g.release(from, payload);
    if (tr) tr.timeline.span(tr.lane, 'reduce', r0!);
  };
  try {
    if (r >= p) {
      // an extra rank: hand the buffer to its core partner, take the result back
      out.add(g.send(r - p, h(0), copyBytes(bytesOf(data))));
      const res = await recv(r - p, steps + 1);
      data.set(viewAs(data, res, n) as never);
      g.release(r - p, res);
    } else {
      if (r + p < size) reduceFrom(r + p, await recv(r + p, 0));
      for (let i = 0; i < steps; i++) {
        const partner = r ^ (1 << i);
        out.add(g.send(partner, h(i + 1), copyBytes(bytesOf(data))));
        reduceFrom(partner, await recv(partner, i + 1));
      }
      if (op === 'mean') {
        if (data instanceof Int32Array) for (let i = 0; i < n; i++) data[i] = Math.trunc(data[i]! / size);
        else k.scale(data, 1 / size);
      }
      if (r + p < size) out.add(g.send(r + p, h(steps + 1), copyBytes(bytesOf(data))));
    }
  } catch (e) {
    out.rethrow(e);
  }
  await out.flush();
}
