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
 * sum of the other ranks' lengths (each forwarded once) minus the previous rank's.
 */
export function allgatherBytes(g: ProcessGroup, bytes: Uint8Array): Promise<Uint8Array[]> {
  return g.run('allgather', async (seq) => {
    const parts: Uint8Array[] = new Array(g.size);
    parts[g.rank] = copyBytes(bytes);
    if (g.size === 1) return parts;
    const out = new Outbox(g);
    try {
      out.add(g.send(g.next, { tag: Tags.allgatherBytes, step: 0, seq, aux: 0 }, bytes));
      for (let s = 0; s < g.size - 1; s++) {
        const b = (g.rank - s - 1 + g.size) % g.size;
        const { payload } = await g.recv(g.prev, { tag: Tags.allgatherBytes, step: s, seq, aux: 0 });
        parts[b] = payload;
        if (s + 1 < g.size - 1) out.add(g.send(g.next, { tag: Tags.allgatherBytes, step: s + 1, seq, aux: 0 }, payload));
      }
    } catch (e) {
      out.rethrow(e);
    }
    await out.flush();
    return parts;
  });
}
