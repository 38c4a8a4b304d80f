import { Errors, type NumericArray, type ProcessGroup } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { bytesOf, copyBytes, dtypeOf, expectBytes, Outbox, sendBytes, viewAs } from './common.js';

/**
 * Ring allgather of equal-size blocks: `output` (length size * input.length, same dtype) receives rank i's
 * `input` at block i on every rank. Both arrays are owned by the caller; `input` is only read.
 *
 * Steps: size-1; at step s rank r sends block (r-s) to the next rank and receives block (r-s-1) from the
 * previous one. Bytes sent per rank: (size-1) * input bytes.
 */
export async function allgatherRing<T extends NumericArray>(g: ProcessGroup, input: T, output: T): Promise<void> {
  if (dtypeOf(input) !== dtypeOf(output) || output.length !== input.length * g.size)
    throw Errors.invalidArg('output', `must be a ${dtypeOf(input)} array of ${input.length * g.size} elements (size x input)`);
  return g.run('allgather', async (seq) => {
    const n = input.length;
    output.set(input as never, g.rank * n);
    if (g.size === 1) return;
    const out = new Outbox(g);
    const aux = n >>> 0;
    try {
      sendBytes(g, out, g.next, { tag: Tags.allgather, step: 0, seq, aux }, bytesOf(input));
      for (let s = 0; s < g.size - 1; s++) {
        const b = (g.rank - s - 1 + g.size) % g.size;
        const { payload } = await g.recv(g.prev, { tag: Tags.allgather, step: s, seq, aux });
        expectBytes(g, g.prev, 'allgather block', payload.byteLength, n * input.BYTES_PER_ELEMENT);
        output.set(viewAs(input, payload, n) as never, b * n);
        if (s + 1 < g.size - 1) sendBytes(g, out, g.next, { tag: Tags.allgather, step: s + 1, seq, aux }, payload);
      }
    } catch (e) {
      out.rethrow(e);
    }
    await out.flush();
  });
}

/**
 * Ring allgather of variable-length byte strings: returns `size` arrays, entry i being rank i's `bytes` (the
 * caller owns the results; entry `rank` is a copy). Same steps as `allgatherRing`; bytes sent per rank: the
 * sum of the other ranks' lengths (each forwarded once) minus the previous rank's, plus 8 bytes per string.
 *
 * Each string travels in segments of at most `segmentBytes` (default 1 MiB), so that no message of the ring
 * is larger than its segment size (`RingSync` bounds what a peer may send by it, see `limitIncoming`):
 * message `aux = k` of a string carries its k-th segment, the first one prefixed by u32 segment count and
 * u32 total length (little-endian). A string is put together from the segments received, so a receiver holds
 * no more than it was sent (at the price of one copy for a string longer than a segment: reserving the
 * announced total up front is what the bound is there to prevent).
 */
export function allgatherBytes(g: ProcessGroup, bytes: Uint8Array, opts: { segmentBytes?: number } = {}): Promise<Uint8Array[]> {
  const seg = opts.segmentBytes ?? 1 << 20;
  if (!Number.isSafeInteger(seg) || seg < 8) throw Errors.invalidArg('options.segmentBytes', `must be an integer >= 8, got ${seg}`);
  return g.run('allgather', async (seq) => {
    const parts: Uint8Array[] = new Array(g.size);
    parts[g.rank] = copyBytes(bytes);
    if (g.size === 1) return parts;
    const out = new Outbox(g);
    const h = (step: number, aux: number) => ({ tag: Tags.allgatherBytes, step, seq, aux });
    try {
      const count = Math.max(1, Math.ceil(bytes.byteLength / seg));
      for (let k = 0; k < count; k++) {
        const chunk = bytes.subarray(k * seg, Math.min(bytes.byteLength, (k + 1) * seg));
        out.add(g.send(g.next, h(0, k), k === 0 ? withPrefix(count, bytes.byteLength, chunk) : chunk));
      }
      for (let s = 0; s < g.size - 1; s++) {
        const b = (g.rank - s - 1 + g.size) % g.size;
        const forward = s + 1 < g.size - 1;
        const first = (await g.recv(g.prev, h(s, 0))).payload;
        if (first.byteLength < 8) throw Errors.badFrame(`allgather from rank ${g.prev}`, `first segment of ${first.byteLength} bytes has no prefix`);
        const dv = new DataView(first.buffer, first.byteOffset, 8);
        const n = dv.getUint32(0, true);
        const total = dv.getUint32(4, true);
        if (n < 1 || n !== Math.max(1, Math.ceil(total / seg))) throw Errors.badFrame(`allgather from rank ${g.prev}`, `${n} segments announced for ${total} bytes in segments of ${seg}`);
        if (forward) out.add(g.send(g.next, h(s + 1, 0), first));
        const chunks = [first.subarray(8)];
        for (let k = 1; k < n; k++) {
          const { payload } = await g.recv(g.prev, h(s, k));
          if (forward) out.add(g.send(g.next, h(s + 1, k), payload));
          chunks.push(payload);
        }
        const got = chunks.reduce((a, c) => a + c.byteLength, 0);
        if (got !== total) throw Errors.badFrame(`allgather from rank ${g.prev}`, `segments hold ${got} bytes, ${total} announced`);
        parts[b] = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
      }
    } catch (e) {
      out.rethrow(e);
    }
    await out.flush();
    return parts;
  });
}

function withPrefix(count: number, total: number, chunk: Uint8Array): Uint8Array {
  const m = new Uint8Array(8 + chunk.byteLength);
  const dv = new DataView(m.buffer);
  dv.setUint32(0, count, true);
  dv.setUint32(4, total, true);
  m.set(chunk, 8);
  return m;
}
