import { Errors } from '@shoal/core';
import type { GradientSync } from '../api.js';
import type { KeySpec } from './key-layout.js';
import type { KVWorker } from './kv-worker.js';
import { PsSync } from './ps-sync.js';
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
}

export class ServerTables {
  readonly specs: ReadonlyMap<string, ServerTableSpec>;
  private readonly prefix: string;
  private inited = false;

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
   */
  async init(values?: readonly Float32Array[]): Promise<void> {
    const rescale = (this.o.updater as { rescale?: number }).rescale ?? 1;
    const updater = this.o.updater.type === 'assign' ? this.o.updater : { ...this.o.updater, rescale: rescale / this.kv.numWorkers };
    const specs: KeySpec[] = [...this.specs.values()].map((t) => ({
      key: this.prefix + t.name, size: t.numRows * t.rowSize, rows: { numRows: t.numRows, rowSize: t.rowSize }, update: 'optimizer', updater,
    }));
    if (this.kv.rank === 0 && values?.length !== specs.length) throw Errors.invalidArg('values', `rank 0 must give ${specs.length} initial tables`);
    await this.kv.init(specs, this.kv.rank === 0 ? values : undefined);
    this.inited = true;
  }

  /**
   * The current rows `ids` of table `name` (after every round this worker pushed), packed in `ids` order into
   * `out` (or a new array of `ids.length * rowSize`).
   */
  pull(name: string, ids: Int32Array, out?: Float32Array): Promise<Float32Array> {
    this.spec(name);
    return this.kv.rowSparsePull(this.prefix + name, ids, out) as Promise<Float32Array>;
  }

  /**
   * Push this worker's gradient rows of table `name` (`rows`: `ids.length * rowSize`; ids need not be sorted
   * or unique, repeats are summed). Resolves when the servers applied the round (sync: all workers pushed).
   */
  push(name: string, ids: Int32Array, rows: Float32Array): Promise<void> {
    this.spec(name);
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
 * The parameter-server worker behind a gradient engine: `PsSync`'s, or the sparse half of a hybrid engine (any
 * engine with a `sparse` PsSync). Null for engines without servers (ring, local).
 */
export function psWorkerOf(sync: GradientSync): KVWorker | null {
  if (sync instanceof PsSync) return sync.kv;
  const sparse = (sync as { sparse?: unknown }).sparse;
  return sparse instanceof PsSync ? sparse.kv : null;
}
