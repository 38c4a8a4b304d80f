import { Errors, type NumericArray, type ProcessGroup } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { bytesOf, dtypeOf, expectBytes, Outbox, segments, sendBytes, viewAs } from './common.js';

export interface BroadcastOptions {
  /** Rank whose values every rank ends with (default 0). */
  root?: number;
  /** Pipeline segment size in bytes (default 1 MiB). */
  segmentBytes?: number;
}

/**
 * Pipelined ring broadcast: the root sends `data` in segments to the next rank; every other rank stores each
 * segment and forwards it at once, until the rank before the root. In place on `data` (owned by the caller):
 * on return every rank holds the root's values. Collective: same length and dtype on every rank.
 *
 * Steps: size-1 hops, pipelined over segments. Bytes sent: `bytes` by every rank except the one before the root.
 */
export async function broadcastRing(g: ProcessGroup, data: NumericArray, opts: BroadcastOptions = {}): Promise<void> {
  dtypeOf(data);
  const root = opts.root ?? 0;
  if (!Number.isInteger(root) || root < 0 || root >= g.size) throw Errors.invalidArg('options.root', `must be a rank in [0, ${g.size}), got ${root}`);
  const segElems = Math.max(1, Math.floor((opts.segmentBytes ?? 1 << 20) / data.BYTES_PER_ELEMENT));
  return g.run('broadcast', async (seq) => {
    if (g.size === 1) return;
    const segs = segments(0, data.length, segElems);
    const h = { tag: Tags.broadcast, step: root, seq, aux: data.length >>> 0 };
    const forward = g.next !== root;
    const out = new Outbox(g);
    try {
      if (g.rank === root) {
        for (const s of segs) sendBytes(g, out, g.next, h, bytesOf(data, s.start, s.len));
      } else {
        for (const s of segs) {
          const { payload } = await g.recv(g.prev, h);
          expectBytes(g, g.prev, 'broadcast segment', payload.byteLength, s.len * data.BYTES_PER_ELEMENT);
          if (forward) sendBytes(g, out, g.next, h, payload);
          data.set(viewAs(data, payload, s.len) as never, s.start);
        }
      }
    } catch (e) {
      out.rethrow(e);
    }
    await out.flush();
  });
}
