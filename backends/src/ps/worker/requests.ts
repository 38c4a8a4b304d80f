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

/**
 * A server's part of a dense pull or pushPull cut at key boundaries into parts of at least `bytes` bytes of
 * values each (the last may be smaller), in key order; `bytes` <= 0 or non-finite, or a part no bigger: the part
 * itself. Sent as concurrent requests, the server replies to each as soon as its keys are ready, so on a
 * full-duplex link the values of early keys go out while the gradients of later ones still come in.
 */
export function splitPart(p: ServerPart, bytes: number): ServerPart[] {
  if (!(bytes > 0) || !Number.isFinite(bytes) || p.keys.length < 2) return [p];
  const out: ServerPart[] = [];
  let q = perServer(1)[0]!;
  let size = 0;
  p.keys.forEach((key, i) => {
    q.keys.push(key);
    q.counters.push(p.counters[i]!);
    if (p.arrays[i]) q.arrays.push(p.arrays[i]!);
    if (p.targets[i]) q.targets.push(p.targets[i]!);
    if (p.staged[i]) q.staged.push(p.staged[i]!);
    size += p.targets[i]?.byteLength ?? p.arrays[i]?.byteLength ?? 0;
    if (size >= bytes && i < p.keys.length - 1) {
      out.push(q);
      q = perServer(1)[0]!;
      size = 0;
    }
  });
  out.push(q);
  return out;
}
