import type { FloatArray } from '@shoal/core';
import type { KeyLayout, KeySlice, KeySpec } from '../key-layout.js';

/** One server's part of a batched operation: keys, counters, gradient slices, where the reply values land. */
export interface ServerPart {
  keys: string[];
  counters: number[];
  arrays: FloatArray[];
  targets: FloatArray[];
  /** Staging output slices, when the reply comes through them (same order as `targets`). */
  staged: FloatArray[];
  specs: KeySpec[];
  slices: KeySlice[];
  values: (FloatArray | null)[];
}

export function perServer(numServers: number): ServerPart[] {
  return Array.from({ length: numServers }, () => ({ keys: [], counters: [], arrays: [], targets: [], staged: [], specs: [], slices: [], values: [] }));
}

/**
 * Split a dense operation on `keys` over the servers: per server the keys, counters (`issued`: pushes count one
 * more when `count`), gradient slices and output slices. For servers in `use` the gradients are first copied into
 * the staging buffers (unless they are those buffers) and the slices point there, so a resend after a server
 * restart (which no longer knows the staging buffers) sends them from there.
 */
export function collect(
  layout: KeyLayout,
  issued: Map<string, number>,
  staging: (key: string) => { grad: FloatArray; out: FloatArray } | undefined,
  per: ServerPart[],
  keys: readonly string[],
  grads: readonly FloatArray[] | undefined,
  outs: readonly FloatArray[] | undefined,
  use: boolean[] | null,
  count: boolean,
): void {
  keys.forEach((key, i) => {
    const c = issued.get(key) ?? 0;
    if (count) issued.set(key, c + 1);
    const st = use ? staging(key) : undefined;
    const g = grads?.[i];
    for (const sl of layout.slicesOf(key)) {
      const p = per[sl.server]!;
      const shared = !!(st && use![sl.server]);
      p.keys.push(key);
      p.counters.push(c);
      if (g) {
        let arr = g.subarray(sl.start, sl.end);
        if (shared) {
          const dst = st!.grad.subarray(sl.start, sl.end);
          if (arr.buffer !== dst.buffer || arr.byteOffset !== dst.byteOffset) dst.set(arr);
          arr = dst;
        }
        p.arrays.push(arr);
      }
      if (outs) p.targets.push(outs[i]!.subarray(sl.start, sl.end));
      if (shared) p.staged.push(st!.out.subarray(sl.start, sl.end));
    }
  });
}
