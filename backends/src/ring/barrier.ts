import type { ProcessGroup } from '@shoal/core';
import { Tags } from '@shoal/core/group';
import { Outbox } from './common.js';

/**
 * Ring barrier: an allgather of empty messages. After size-1 steps each rank has (transitively) heard from
 * every other rank after that rank entered the barrier, so no rank leaves before all have arrived.
 * Bytes sent per rank: (size-1) headers of 16 bytes.
 */
export function barrierRing(g: ProcessGroup): Promise<void> {
  return g.run('barrier', async (seq) => {
    if (g.size === 1) return;
    const out = new Outbox(g);
    try {
      out.add(g.send(g.next, { tag: Tags.barrier, step: 0, seq, aux: 0 }, undefined));
      for (let s = 0; s < g.size - 1; s++) {
        await g.recv(g.prev, { tag: Tags.barrier, step: s, seq, aux: 0 });
        if (s + 1 < g.size - 1) out.add(g.send(g.next, { tag: Tags.barrier, step: s + 1, seq, aux: 0 }, undefined));
      }
    } catch (e) {
      out.rethrow(e);
    }
    await out.flush();
  });
}
