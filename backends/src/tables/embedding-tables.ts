import { Errors } from '@shoal/core';
import type { DenseTensor, GradientSync, RowSparseTensor } from '../api.js';
import { psWorkerOf, ServerTables, type ServerTableSpec } from '../ps/server-tables.js';
import type { KeyExport } from '../ps/worker/key-state.js';
import { fuseTables, splitTables } from './fuse-tables.js';
import { LocalOptimizer, type OptimizerSpec } from './local-optimizer.js';

export interface EmbeddingTablesOptions {
  /**
   * Where the tables live. `server`: on the parameter servers of a ps or hybrid engine, stepped there by
   * `optimizer` (a worker pulls the rows a step needs and pushes their gradients). `replicated`: every rank holds
   * full tables; row gradients are averaged with `sparseAllreduceMean` (engines without it: densified and
   * allreduced) and every rank runs the same `optimizer` locally. `auto` (default): `server` when the engine has
   * parameter servers.
   */
  placement?: 'auto' | 'server' | 'replicated';
  /** The tables' optimizer (lazy: only touched rows move). Adam with `rowStep` corrects each row's bias by its own count. */
  optimizer: OptimizerSpec;
  /** Key prefix on the servers (default `t:`); each set of tables sharing servers needs its own. */
  prefix?: string;
  /**
   * Start from a checkpoint (`exportState` of tables with the same specs, placement and optimizer) instead of the
   * initial values: values, optimizer state and update counts, so training goes on exactly. Server placement:
   * rank 0's is used (the servers must be fresh); replicated: every rank passes the same one.
   */
  restore?: TablesState;
}

/**
 * The tables with their optimizer state, as `EmbeddingTables.exportState` copies them for a checkpoint: server
 * placement, the servers' keys (one when fused; `KVWorker.exportKeys`); replicated, one entry per table (its
 * values, the local optimizer's state and update count as `version`).
 */
export interface TablesState {
  placement: 'server' | 'replicated';
  keys: KeyExport[];
}

/**
 * Embedding tables of a data-parallel job, held on the parameter servers or replicated on every rank, behind one
 * interface (MXNet's row_sparse KVStore). A training step pulls the rows its batch needs (`pull`, server) or reads
 * the local tables (`local()`, replicated), computes row gradients, and `push`es them: the servers (or every rank)
 * then apply the optimizer to the mean gradient of the touched rows.
 *
 *   const tables = await EmbeddingTables.create(sync, [{ name: 'user', numRows: 1000, rowSize: 32 }], [init],
 *     { optimizer: { type: 'adam', lr: 0.01, rowStep: true } });
 *   const [rows] = await tables.pull([ids]);            // server: ids sorted, unique; rows packed in ids order
 *   await tables.push([{ name: 'user', numRows: 1000, rowSize: 32, rowIds: ids, rows: grads }]);
 *   const [user] = await tables.pullAll();              // full tables (evaluation, export)
 *
 * Collective: `create` and `push` are called by every rank in the same order (sync rounds). Values passed in are
 * rank 0's initial tables (other ranks' are replaced by them); replicated tables are updated in place.
 */
export class EmbeddingTables {
  private constructor(
    readonly placement: 'server' | 'replicated',
    readonly specs: readonly ServerTableSpec[],
    private readonly sync: GradientSync,
    private readonly server: ServerTables | null,
    private readonly tables: Float32Array[] | null,
    private readonly optimizer: LocalOptimizer | null,
  ) {}

  /**
   * Declare the tables (collective). `values`: one full table per spec (`numRows * rowSize`), rank 0's are the
   * initial ones; with server placement other ranks may pass `undefined` and no rank keeps a copy. With
   * `o.restore` the values may be left out.
   */
  static async create(sync: GradientSync, specs: readonly ServerTableSpec[], values: readonly Float32Array[] | undefined, o: EmbeddingTablesOptions): Promise<EmbeddingTables> {
    const kv = psWorkerOf(sync);
    const placement = (o.placement ?? 'auto') === 'auto' ? (kv ? 'server' : 'replicated') : o.placement!;
    if (placement !== 'server' && placement !== 'replicated') throw Errors.invalidArg('placement', `must be auto|server|replicated, got ${JSON.stringify(placement)}`);
    if (values !== undefined || (o.restore === undefined && (sync.rank === 0 || placement === 'replicated'))) {
      if (values?.length !== specs.length) throw Errors.invalidArg('values', `need ${specs.length} initial tables, got ${values?.length ?? 'none'}`);
      specs.forEach((t, k) => {
        if (values[k]!.length !== t.numRows * t.rowSize) throw Errors.invalidArg(`initial table ${t.name}`, `has ${values[k]!.length} values, expected ${t.numRows} x ${t.rowSize}`);
      });
    }
    if (placement === 'server') {
      if (kv === null) throw Errors.config('tables', `server-held tables need the ps or hybrid backend (parameter servers), got ${sync.kind}`);
      // One row-sparse key for all tables: each step's pull and push is one request per server, not one per table.
      const server = new ServerTables(kv, specs, { updater: o.optimizer, fused: !(o.optimizer as { wd?: number }).wd, prefix: o.prefix ?? 't:' });
      if (o.restore && sync.rank === 0) await server.init(undefined, checkRestore(o.restore, 'server').keys);
      else await server.init(sync.rank === 0 ? values : undefined);
      return new EmbeddingTables('server', specs, sync, server, null, null);
    }
    const optimizer = new LocalOptimizer(o.optimizer);
    if (o.restore) {
      const keys = checkRestore(o.restore, 'replicated').keys;
      if (keys.length !== specs.length || keys.some((k, i) => k.data.length !== specs[i]!.numRows * specs[i]!.rowSize)) {
        throw Errors.invalidArg('restore', `holds tables of ${keys.map((k) => k.data.length).join(', ')} values, these are ${specs.map((t) => t.numRows * t.rowSize).join(', ')}`);
      }
      optimizer.importState(Object.fromEntries(keys.map((k, i) => [specs[i]!.name, { state: k.state, step: k.version }])));
      return new EmbeddingTables('replicated', specs, sync, null, keys.map((k) => Float32Array.from(k.data)), optimizer);
    }
    await sync.broadcastParameters(specs.map((t, k): DenseTensor => ({ name: t.name, shape: [t.numRows, t.rowSize], data: values![k]! })));
    return new EmbeddingTables('replicated', specs, sync, null, [...values!], optimizer);
  }

  /**
   * A copy of the tables and their optimizer state for a checkpoint (restore it with `create(..., { restore })`).
   * Server placement: read from the servers, so call it after a `push` settled and before the next one (the
   * round boundary; no other rank can move the tables meanwhile); one rank suffices. Replicated: this rank's
   * copy, equal on every rank.
   */
  async exportState(): Promise<TablesState> {
    if (this.server) return { placement: 'server', keys: await this.server.exportState() };
    const st = this.optimizer!.exportState();
    return {
      placement: 'replicated',
      keys: this.specs.map((t, k) => ({ key: t.name, data: Float32Array.from(this.tables![k]!), state: st[t.name]?.state ?? {}, version: st[t.name]?.step ?? 0 })),
    };
  }

  /** The full tables this rank holds (replicated, updated in place by `push`), or null (server). */
  local(): readonly Float32Array[] | null {
    return this.tables;
  }

  /**
   * The current rows `ids[k]` of each table k (after every round this rank pushed), packed in ids order. Server:
   * one request per server for all tables; replicated: copies of the local rows.
   */
  async pull(ids: readonly Int32Array[]): Promise<Float32Array[]> {
    if (ids.length !== this.specs.length) throw Errors.invalidArg('ids', `need one id list per table (${this.specs.length}), got ${ids.length}`);
    if (this.server) return this.server.pullMany(this.specs.map((t, k) => ({ name: t.name, ids: ids[k]! })));
    return this.specs.map((t, k) => {
      const out = new Float32Array(ids[k]!.length * t.rowSize), src = this.tables![k]!;
      ids[k]!.forEach((r, i) => out.set(src.subarray(r * t.rowSize, (r + 1) * t.rowSize), i * t.rowSize));
      return out;
    });
  }

  /** Every table in full (server: one pull of all rows; replicated: the local arrays themselves). */
  async pullAll(): Promise<Float32Array[]> {
    if (!this.server) return [...this.tables!];
    return this.server.pullMany(this.specs.map((t) => ({ name: t.name, ids: Int32Array.from({ length: t.numRows }, (_, i) => i) })));
  }

  /**
   * This rank's row gradients, one per table in spec order (unique sorted ids; empty ones allowed), as one sync
   * round: resolves when the mean gradient's update is applied (server: on the servers; replicated: here, after
   * the row collective). A non-finite gradient value is ERR_NAN before anything is sent (a server would fold it
   * into the table for good).
   */
  async push(grads: readonly RowSparseTensor[]): Promise<void> {
    if (grads.length !== this.specs.length || grads.some((g, k) => g.name !== this.specs[k]!.name)) {
      throw Errors.invalidArg('grads', `need one gradient per table in order ${this.specs.map((t) => t.name).join(', ')}`);
    }
    for (const g of grads) for (let i = 0; i < g.rows.length; i++) if (!Number.isFinite(g.rows[i]!)) throw Errors.nan(`row gradient of ${g.name}`, { rank: this.sync.rank });
    if (this.server) {
      await this.server.pushMany(grads.map((g) => ({ name: g.name, ids: g.rowIds, rows: g.rows })));
      return;
    }
    // One row-sparse collective for all tables (one round instead of one per table).
    const fused = fuseTables(grads);
    const merged = splitTables(this.sync.sparseAllreduceMean ? await this.sync.sparseAllreduceMean(fused) : await densifiedMean(this.sync, fused), this.specs);
    merged.forEach((g, k) => { if (g.rowIds.length) this.optimizer!.step(g.name, this.tables![k]!, g.rows, g.rowIds, g.rowSize); });
  }

  /** Table bytes this rank holds with their optimizer state (0 with server placement). */
  heldBytes(): number {
    if (!this.tables) return 0;
    return this.tables.reduce((a, t) => a + t.byteLength, 0) + this.optimizer!.stateBytes();
  }

  /** Bytes of all tables (what one full replica holds). */
  get tableBytes(): number {
    return this.specs.reduce((a, t) => a + t.numRows * t.rowSize * 4, 0);
  }

  /** Bytes this rank's parameter-server client sent and received so far (server placement; zeros otherwise). */
  stats(): { bytesSent: number; bytesReceived: number } {
    return this.server ? this.server.stats() : { bytesSent: 0, bytesReceived: 0 };
  }
}

function checkRestore(r: TablesState, placement: 'server' | 'replicated'): TablesState {
  if (r.placement !== placement) throw Errors.invalidArg('restore', `holds ${r.placement} tables, these are ${placement}`);
  return r;
}

/** Engines without row-sparse support: scatter into a full dense table, allreduce it, keep the rows that are non-zero. */
async function densifiedMean(sync: GradientSync, g: RowSparseTensor): Promise<RowSparseTensor> {
  const full = new Float32Array(g.numRows * g.rowSize);
  for (let r = 0; r < g.rowIds.length; r++) {
    const o = g.rowIds[r]! * g.rowSize;
    for (let k = 0; k < g.rowSize; k++) full[o + k]! += g.rows[r * g.rowSize + k]!;
  }
  await sync.allreduceMean([{ name: g.name, shape: [g.numRows, g.rowSize], data: full }]);
  const ids: number[] = [];
  for (let r = 0; r < g.numRows; r++) {
    const o = r * g.rowSize;
    for (let k = 0; k < g.rowSize; k++) if (full[o + k] !== 0) { ids.push(r); break; }
  }
  const rows = new Float32Array(ids.length * g.rowSize);
  ids.forEach((id, i) => rows.set(full.subarray(id * g.rowSize, (id + 1) * g.rowSize), i * g.rowSize));
  return { name: g.name, numRows: g.numRows, rowSize: g.rowSize, rowIds: Int32Array.from(ids), rows };
}
