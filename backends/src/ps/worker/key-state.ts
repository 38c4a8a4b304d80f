import { Errors, type FloatArray } from '@shoal/core';
import type { KeySlice, KeySpec } from '../key-layout.js';
import type { KeyState } from '../protocol.js';

/**
 * A whole key's value and optimizer state, as a checkpoint holds it (`KVWorker.exportKeys`). The state arrays are
 * those of the key's updater: element-wise ones (Adam's `m`, `v`) have one value per element, row-wise ones
 * (`rowStep`) one per row of a row-sparse key; the servers hold the slices of both that match their part.
 */
export interface KeyExport extends KeyState {
  key: string;
  data: FloatArray;
}

/** Which slice of a whole-key state array `a` belongs to `sl` (element range, or row range for per-row arrays). */
function range(spec: KeySpec, sl: KeySlice, n: number, what: string): [number, number] {
  if (n === spec.size) return [sl.start, sl.end];
  if (spec.rows && n === spec.rows.numRows) return [sl.rowStart!, sl.rowEnd!];
  throw Errors.invalidArg(what, `has ${n} values; key ${spec.key} needs ${spec.size}${spec.rows ? ` (or ${spec.rows.numRows}, one per row)` : ''}`);
}

/** The part of a whole-key `KeyState` that server slice `sl` holds. */
export function sliceKeyState(spec: KeySpec, sl: KeySlice, r: KeyState): KeyState {
  const state: Record<string, FloatArray> = {};
  for (const [n, a] of Object.entries(r.state)) {
    const [s, e] = range(spec, sl, a.length, `state ${n} of key ${spec.key}`);
    state[n] = a.subarray(s, e);
  }
  return { state, version: r.version };
}

/**
 * Join the servers' parts of one key (`parts[i]` from `slices[i]`, in slice order) into a whole-key export. The
 * parts must be at one round: a key whose slices applied different round counts was not exported at a round
 * boundary (ERR_STATE).
 */
export function joinKeyState(spec: KeySpec, slices: readonly KeySlice[], parts: readonly ({ data: FloatArray } & KeyState)[]): KeyExport {
  const version = parts[0]!.version;
  const off = parts.find((p) => p.version !== version);
  if (off) throw Errors.state(`export of key ${spec.key}: its server slices are at rounds ${parts.map((p) => p.version).join(', ')}; export between a push settling and the next push`);
  const data = spec.dtype === 'float64' ? new Float64Array(spec.size) : new Float32Array(spec.size);
  parts.forEach((p, i) => data.set(p.data, slices[i]!.start));
  const state: Record<string, FloatArray> = {};
  // State a server's updater has not created yet (no update there so far) is zeros, as the updater would start it.
  const names = new Set(parts.flatMap((p) => Object.keys(p.state)));
  for (const name of names) {
    let out: FloatArray | null = null;
    parts.forEach((p, i) => {
      const a = p.state[name];
      if (!a) return;
      const sl = slices[i]!;
      // Element-wise state has the slice's element count, row-wise state its row count.
      const perRow = spec.rows !== undefined && a.length === sl.rowEnd! - sl.rowStart! && a.length !== sl.end - sl.start;
      if (!perRow && a.length !== sl.end - sl.start) throw Errors.state(`export of key ${spec.key}: state ${name} on server ${sl.server} has ${a.length} values for a slice of ${sl.end - sl.start}`);
      const whole = perRow ? spec.rows!.numRows : spec.size;
      out ??= a instanceof Float64Array ? new Float64Array(whole) : new Float32Array(whole);
      if (out.length !== whole) throw Errors.state(`export of key ${spec.key}: state ${name} is per row on some servers and per element on others`);
      out.set(a, perRow ? sl.rowStart! : sl.start);
    });
    state[name] = out!;
  }
  return { key: spec.key, data, state, version };
}
