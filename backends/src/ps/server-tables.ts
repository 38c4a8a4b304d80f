import { Errors } from '@shoal/core';
import type { GradientSync } from '../api.js';
import type { KeySpec } from './key-layout.js';
import type { KVWorker } from './kv-worker.js';
import type { KeyExport } from './worker/key-state.js';
import { PsSync } from './ps-sync.js';
import { HybridSync } from '../hybrid/hybrid-sync.js';
import type { UpdaterSpec } from './updaters.js';

/**
 * Embedding tables that live on the parameter servers (MXNet's row_sparse KVStore pattern): each table is a
 * row-sparse key split by row range over the server shards and updated there by its own server-side optimizer
 * (lazy: only the rows a round touched). A worker holds no table: per step it pulls the rows its batch needs,
 * computes, and pushes the row gradients; in sync mode the servers fold the pushes of all workers into one
 * update per round, scaled by `1 / numWorkers` (so the update is that of the mean gradient).
 *
 * Example:
 *   const t = new ServerTables(kv, [{ name: 'user', numRows: 1000, rowSize: 32 }], { updater: { type: 'adam', lr: 0.01 } });
 *   await t.init(kv.rank === 0 ? [initialValues] : undefined);
 *   const rows = await t.pull('user', ids);              // ids sorted, unique
 *   await t.push('user', ids, grads);                     // every worker, every round (ids may be empty)
 *
 * Collective: `init` and `push` (sync mode) are called by every worker in the same order. Arrays passed in are
 * copied before the returned promise settles; arrays returned belong to the caller.
 */
export interface ServerTableSpec {
  name: string;
  numRows: number;
  rowSize: number;
}

export interface ServerTablesOptions {
  /** The server-side optimizer of every table (built-in updaters; `rescale` is multiplied by 1/numWorkers). */
  updater: Exclude<UpdaterSpec, { type: 'module' }>;
  /** Key prefix on the servers (default `t:`), to keep apart from other users of the same KVWorker. */
  prefix?: string;
  /**
   * Hold all tables in one row-sparse key `${prefix}tables` (table k's row r is row `sum(numRows before k) + r`,
   * rows zero-padded to the widest table), so `pullMany` / `pushMany` make one request per server for all tables
   * instead of one per table and server. The row-wise optimizers see the same rows and gradients (padding stays 0
   * with wd = 0: its gradient is always 0), so the tables evolve exactly as with one key per table. Default false.
   */
  fused?: boolean;
}

/** One table's part of a `pullMany` / `pushMany` call. */
export interface TableRows {
  name: string;
  ids: Int32Array;
  /** pushMany: `ids.length * rowSize` gradient values. */
  rows?: Float32Array;
}

export class ServerTables {
  readonly specs: ReadonlyMap<string, ServerTableSpec>;
  private readonly prefix: string;
  private inited = false;
  /** Fused layout: the first fused row of each table, and the padded row width. */
  private readonly base = new Map<string, number>();
  private readonly width: number;
  private readonly fusedRows: number;

  constructor(
    readonly kv: KVWorker,
    tables: readonly ServerTableSpec[],
    private readonly o: ServerTablesOptions,
  ) {
    const m = new Map<string, ServerTableSpec>();
    for (const t of tables) {
      if (m.has(t.name)) throw Errors.invalidArg('tables', `name ${JSON.stringify(t.name)} appears twice`);
      if (!(Number.isInteger(t.numRows) && t.numRows > 0 && Number.isInteger(t.rowSize) && t.rowSize > 0)) {
        throw Errors.invalidArg(`table ${t.name}`, `needs positive integer numRows and rowSize, got ${t.numRows} x ${t.rowSize}`);
      }
      m.set(t.name, { ...t });
    }
    this.specs = m;
    this.prefix = o.prefix ?? 't:';
    let b = 0;
    for (const t of m.values()) { this.base.set(t.name, b); b += t.numRows; }
    this.fusedRows = b;
    this.width = Math.max(...[...m.values()].map((t) => t.rowSize));
    if (o.fused && (o.updater as { wd?: number }).wd) throw Errors.invalidArg('fused', 'needs wd = 0 (weight decay would move the zero padding)');
  }

  private get fusedKey(): string {
    return this.prefix + 'tables';
  }

  /** Bytes of all tables (what a worker holding full replicas keeps, per copy). */
  get tableBytes(): number {
    let b = 0;
    for (const t of this.specs.values()) b += t.numRows * t.rowSize * 4;
    return b;
  }

  /**
   * Declare the tables on the servers (collective). Rank 0 passes the initial values, one full table per spec
   * in constructor order; other ranks pass nothing. Tables a server already holds (a checkpoint) keep theirs.
   * `restore` (rank 0, instead of `values`): the keys as `exportState` returned them, optimizer state and round
   * count included, so training goes on exactly where the export was taken.
   */
  async init(values?: readonly Float32Array[], restore?: readonly KeyExport[]): Promise<void> {
    if (restore !== undefined) return this.initRestored(restore);
    const tables = [...this.specs.values()];
    if (this.kv.rank === 0 && values?.length !== tables.length) throw Errors.invalidArg('values', `rank 0 must give ${tables.length} initial tables`);
    if (this.o.fused) {
      const W = this.width;
      let init: Float32Array[] | undefined;
      if (this.kv.rank === 0) {
        const all = new Float32Array(this.fusedRows * W);
        tables.forEach((t, k) => {
          const v = values![k]!;
          if (v.length !== t.numRows * t.rowSize) throw Errors.invalidArg(`init value of table ${t.name}`, `has ${v.length} elements, expected ${t.numRows * t.rowSize}`);
          const b = this.base.get(t.name)!;
          for (let r = 0; r < t.numRows; r++) all.set(v.subarray(r * t.rowSize, (r + 1) * t.rowSize), (b + r) * W);
        });
        init = [all];
      }
      await this.kv.init(this.keys(), init);
    } else {
      await this.kv.init(this.keys(), this.kv.rank === 0 ? values : undefined);
    }
    this.inited = true;
  }

  /** The server keys of the tables, in order (one key when fused). */
  private keys(): KeySpec[] {
    const rescale = (this.o.updater as { rescale?: number }).rescale ?? 1;
    const updater = this.o.updater.type === 'assign' ? this.o.updater : { ...this.o.updater, rescale: rescale / this.kv.numWorkers };
    if (this.o.fused) return [{ key: this.fusedKey, size: this.fusedRows * this.width, rows: { numRows: this.fusedRows, rowSize: this.width }, update: 'optimizer', updater }];
    return [...this.specs.values()].map((t) => ({ key: this.prefix + t.name, size: t.numRows * t.rowSize, rows: { numRows: t.numRows, rowSize: t.rowSize }, update: 'optimizer', updater }));
  }

  private async initRestored(restore: readonly KeyExport[]): Promise<void> {
    const specs = this.keys();
    if (this.kv.rank !== 0) throw Errors.invalidArg('restore', 'is given by rank 0 only (the others pass nothing)');
    if (restore.length !== specs.length) throw Errors.invalidArg('restore', `holds ${restore.length} keys, these tables have ${specs.length}${this.o.fused ? ' (fused)' : ''}`);
    restore.forEach((r, i) => {
      if (r.data.length !== specs[i]!.size) throw Errors.invalidArg(`restored key ${r.key}`, `has ${r.data.length} values, ${specs[i]!.key} needs ${specs[i]!.size}`);
    });
    await this.kv.init(specs, restore.map((r) => r.data), restore.map((r) => ({ state: r.state, version: r.version })));
    this.inited = true;
  }

  /**
   * A copy of the tables' server keys with their optimizer state and round count, for a checkpoint (`init(,
   * restore)` puts it on fresh servers). Call it between this worker's push settling and its next push (sync: the
   * servers cannot move past that round without it).
   */
  exportState(): Promise<KeyExport[]> {
    if (!this.inited) throw Errors.state('ServerTables: call init() first');
    return this.kv.exportKeys(this.keys().map((k) => k.key));
  }

  /**
   * The current rows `ids` of table `name` (after every round this worker pushed), packed in `ids` order into
   * `out` (or a new array of `ids.length * rowSize`).
   */
  pull(name: string, ids: Int32Array, out?: Float32Array): Promise<Float32Array> {
    const t = this.spec(name);
    if (out && out.length !== ids.length * t.rowSize) throw Errors.invalidArg(`output of table ${name}`, `must have ${ids.length * t.rowSize} values, got ${out.length}`);
    if (this.o.fused) return this.pullMany([{ name, ids }]).then(([r]) => (out ? (out.set(r!), out) : r!));
    return this.kv.rowSparsePull(this.prefix + name, ids, out) as Promise<Float32Array>;
  }

  /**
   * The current rows of several tables (as `pull`, one result per part, packed in its `ids` order). Fused
   * layout: one request per server for all parts; otherwise one per table and server, concurrently.
   */
  async pullMany(parts: readonly TableRows[]): Promise<Float32Array[]> {
    if (!this.o.fused) return Promise.all(parts.map((p) => this.pull(p.name, p.ids)));
    const W = this.width;
    const n = parts.reduce((a, p) => a + p.ids.length, 0);
    const ids = new Int32Array(n);
    let at = 0;
    for (const p of parts) {
      const t = this.spec(p.name), b = this.base.get(p.name)!;
      for (let i = 0; i < p.ids.length; i++) {
        const r = p.ids[i]!;
        if (!(Number.isInteger(r) && r >= 0 && r < t.numRows)) throw Errors.invalidArg(`row id ${r} of table ${p.name}`, `is outside [0, ${t.numRows})`);
        ids[at++] = b + r;
      }
    }
    const got = (await this.kv.rowSparsePull(this.fusedKey, ids)) as Float32Array;
    at = 0;
    return parts.map((p) => {
      const rs = this.specs.get(p.name)!.rowSize;
      const out = new Float32Array(p.ids.length * rs);
      for (let i = 0; i < p.ids.length; i++, at++) out.set(got.subarray(at * W, at * W + rs), i * rs);
      return out;
    });
  }

  /**
   * Push the gradient rows of several tables as one round (as `push` for each part; sync mode: every worker
   * calls with the same table names in the same order). Fused layout: one request per server for all parts;
   * otherwise one round per table, concurrently. Resolves when the servers applied the round(s).
   */
  async pushMany(parts: readonly TableRows[]): Promise<void> {
    if (!this.o.fused) {
      await Promise.all(parts.map((p) => this.push(p.name, p.ids, p.rows ?? new Float32Array(0))));
      return;
    }
    const W = this.width;
    const n = parts.reduce((a, p) => a + p.ids.length, 0);
    const ids = new Int32Array(n), rows = new Float32Array(n * W);
    let at = 0;
    for (const p of parts) {
      const t = this.spec(p.name), b = this.base.get(p.name)!, rs = t.rowSize;
      if (p.rows?.length !== p.ids.length * rs) throw Errors.invalidArg(`rows of table ${p.name}`, `must have ids.length * ${rs} = ${p.ids.length * rs} values, got ${p.rows?.length}`);
      for (let i = 0; i < p.ids.length; i++, at++) {
        const r = p.ids[i]!;
        if (!(Number.isInteger(r) && r >= 0 && r < t.numRows)) throw Errors.invalidArg(`row id ${r} of table ${p.name}`, `is outside [0, ${t.numRows})`);
        ids[at] = b + r;
        rows.set(p.rows.subarray(i * rs, (i + 1) * rs), at * W);
      }
    }
    await this.kv.rowSparsePush(this.fusedKey, ids, rows);
  }

  /**
   * Push this worker's gradient rows of table `name` (`rows`: `ids.length * rowSize`; ids need not be sorted
   * or unique, repeats are summed). Resolves when the servers applied the round (sync: all workers pushed).
   */
  push(name: string, ids: Int32Array, rows: Float32Array): Promise<void> {
    this.spec(name);
    if (this.o.fused) return this.pushMany([{ name, ids, rows }]);
    return this.kv.rowSparsePush(this.prefix + name, ids, rows);
  }

  /** The whole table (e.g. for evaluation), after every round this worker pushed. */
  pullAll(name: string): Promise<Float32Array> {
    const t = this.spec(name);
    return this.pull(name, Int32Array.from({ length: t.numRows }, (_, i) => i));
  }

  /** Bytes this worker's KVWorker sent and received so far (all its keys). */
  stats(): { bytesSent: number; bytesReceived: number } {
    const s = this.kv.stats();
    return { bytesSent: s.bytesSent, bytesReceived: s.bytesReceived };
  }

  private spec(name: string): ServerTableSpec {
    if (!this.inited) throw Errors.state('ServerTables: call init() first');
    const t = this.specs.get(name);
    if (!t) throw Errors.invalidArg('table', `${JSON.stringify(name)} is not one of ${[...this.specs.keys()].join(', ')}`);
    return t;
  }
}

/**
 * The parameter-server worker behind a gradient engine: `PsSync`'s, or the one of a `HybridSync` whose sparse
 * half is a `PsSync`. Null for engines without servers (ring, local).
 */
export function psWorkerOf(sync: GradientSync): KVWorker | null {
  if (sync instanceof PsSync) return sync.kv;
  if (sync instanceof HybridSync && sync.sparse instanceof PsSync) return sync.sparse.kv;
  return null;
}
