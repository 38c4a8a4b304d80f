import { Errors, type FloatArray } from '@shoal/core';
import { fnv1a32 } from '@shoal/core/util';
import type { UpdaterSpec } from './updaters.js';

/**
 * Key specs and the key slicer (ps-lite's `Slicer`): how each key is laid out over the servers. Every worker
 * computes the same layout from the same specs, and each server checks the slices it is given, so the layout is
 * agreed once at init and never sent around.
 *
 * Rules (MXNet's KVStoreDist):
 * - a dense key smaller than `bigKeyBound` elements (MXNet's default 1e6) lives whole on one server, chosen by a
 *   hash of its name;
 * - a bigger dense key is split into `numServers` near-equal contiguous element ranges, one per server;
 * - a row-sparse key `[numRows, rowSize]` is split by row range: server s holds rows
 *   `[floor(s * numRows / S), floor((s + 1) * numRows / S))`.
 */
export type Dtype = 'float32' | 'float64';
export type { FloatArray };

export interface KeySpec {
  /** Key name, identical on every worker. */
  key: string;
  /** Total elements (for a row-sparse key: numRows * rowSize). */
  size: number;
  dtype?: Dtype;
  /** Present for a row-sparse (embedding) key. */
  rows?: { numRows: number; rowSize: number };
  /**
   * How the server folds the pushes of a round into the stored value: `'optimizer'` uses the server's updater
   * (SGD, Adam, Adagrad, ...), `'assign'` stores the sum of the pushes (MXNet without an updater; for
   * allreduce-style sum-only use). Default `'optimizer'`.
   */
  update?: 'optimizer' | 'assign';
  /**
   * This key's own server-side optimizer (MXNet's `kvstore.set_optimizer`, per key), used instead of the
   * server's configured updater when `update` is `'optimizer'`. Built-in types only (no `module`): workers
   * choose the rule, servers only run code they were started with.
   */
  updater?: Exclude<UpdaterSpec, { type: 'module' }>;
}

/** One server's part of a key: elements `[start, end)` (for row-sparse keys also rows `[rowStart, rowEnd)`). */
export interface KeySlice {
  server: number;
  start: number;
  end: number;
  rowStart?: number;
  rowEnd?: number;
}

export const DEFAULT_BIG_KEY_BOUND = 1_000_000;

/** FNV-1a of a string: a stable hash for small-key placement. */
export function keyHash(key: string): number {
  return fnv1a32(key);
}

/** Check a spec; throws RangeError naming the key and the problem. */
export function validateKeySpec(s: KeySpec): void {
  if (typeof s.key !== 'string' || s.key.length === 0) throw Errors.invalidArg('key', `must be a non-empty string, got ${JSON.stringify(s.key)}`);
  if (!Number.isInteger(s.size) || s.size < 0) throw Errors.invalidArg(`size of key ${s.key}`, `must be an integer >= 0, got ${s.size}`);
  if (s.dtype !== undefined && s.dtype !== 'float32' && s.dtype !== 'float64') throw Errors.invalidArg(`dtype of key ${s.key}`, `must be float32|float64, got ${s.dtype}`);
  if (s.rows) {
    const { numRows, rowSize } = s.rows;
    if (!Number.isInteger(numRows) || numRows < 1 || !Number.isInteger(rowSize) || rowSize < 1) {
      throw Errors.invalidArg(`rows of key ${s.key}`, `must be positive integers, got ${numRows} x ${rowSize}`);
    }
    if (numRows * rowSize !== s.size) throw Errors.invalidArg(`size of key ${s.key}`, `must be numRows * rowSize = ${numRows * rowSize}, got ${s.size}`);
  }
  if (s.updater !== undefined) {
    const t = (s.updater as { type?: unknown }).type;
    if (t !== 'assign' && t !== 'add' && t !== 'sgd' && t !== 'adam' && t !== 'adagrad') {
      throw Errors.invalidArg(`updater of key ${s.key}`, `must be a built-in updater (assign|add|sgd|adam|adagrad), got ${JSON.stringify(t)}`);
    }
    if (s.update === 'assign') throw Errors.invalidArg(`updater of key ${s.key}`, "needs update: 'optimizer' (the key is declared 'assign')");
  }
}

/** The slices of one key over `numServers` servers (empty slices are left out, except for a 0-size key). */
export function sliceKey(spec: KeySpec, numServers: number, bigKeyBound = DEFAULT_BIG_KEY_BOUND): KeySlice[] {
  if (spec.rows) {
    const { numRows, rowSize } = spec.rows;
    const out: KeySlice[] = [];
    for (let s = 0; s < numServers; s++) {
      const r0 = Math.floor((s * numRows) / numServers);
      const r1 = Math.floor(((s + 1) * numRows) / numServers);
      if (r1 > r0) out.push({ server: s, start: r0 * rowSize, end: r1 * rowSize, rowStart: r0, rowEnd: r1 });
    }
    return out;
  }
  if (spec.size < bigKeyBound || numServers === 1) return [{ server: keyHash(spec.key) % numServers, start: 0, end: spec.size }];
  const out: KeySlice[] = [];
  for (let s = 0; s < numServers; s++) {
    const a = Math.floor((s * spec.size) / numServers);
    const b = Math.floor(((s + 1) * spec.size) / numServers);
    if (b > a) out.push({ server: s, start: a, end: b });
  }
  return out;
}

/** Layout of many keys: key -> slices. Throws on duplicate keys. */
export class KeyLayout {
  readonly specs = new Map<string, KeySpec>();
  readonly slices = new Map<string, KeySlice[]>();
  constructor(
    readonly numServers: number,
    readonly bigKeyBound = DEFAULT_BIG_KEY_BOUND,
  ) {
    if (!Number.isInteger(numServers) || numServers < 1) throw Errors.invalidArg('numServers', `must be a positive integer, got ${numServers}`);
  }
  add(spec: KeySpec): KeySlice[] {
    validateKeySpec(spec);
    const old = this.specs.get(spec.key);
    if (old) {
      if (!sameSpec(old, spec)) throw Errors.mismatch(`key ${spec.key}`, `declared as ${describeSpec(old)} and now as ${describeSpec(spec)}`);
      return this.slices.get(spec.key)!;
    }
    const sl = sliceKey(spec, this.numServers, this.bigKeyBound);
    this.specs.set(spec.key, spec);
    this.slices.set(spec.key, sl);
    return sl;
  }
  spec(key: string): KeySpec {
    const s = this.specs.get(key);
    if (!s) throw Errors.invalidArg(`key ${JSON.stringify(key)}`, 'was not initialised (call init first)');
    return s;
  }
  slicesOf(key: string): KeySlice[] {
    this.spec(key);
    return this.slices.get(key)!;
  }
}

export function sameSpec(a: KeySpec, b: KeySpec): boolean {
  return describeSpec(a) === describeSpec(b);
}
export function describeSpec(s: KeySpec): string {
  return `${s.dtype ?? 'float32'}[${s.rows ? `${s.rows.numRows}x${s.rows.rowSize}` : s.size}]${s.update === 'assign' ? ' assign' : ''}${s.updater ? ` ${JSON.stringify(s.updater)}` : ''}`;
}

/** The typed-array class of a key's dtype (float32 when absent). */
export function floatArrayClass(dtype: Dtype | undefined): Float32ArrayConstructor | Float64ArrayConstructor {
  return dtype === 'float64' ? Float64Array : Float32Array;
}

export function allocFloat(dtype: Dtype | undefined, n: number): FloatArray {
  return new (floatArrayClass(dtype))(n);
}
