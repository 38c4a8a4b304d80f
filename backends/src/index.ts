/**
 * @shoal/backends: the gradient-sync engines. Every engine implements `GradientSync` (api.ts) and passes one
 * compliance suite; callers tell them apart by `capabilities`. This entry names what a training loop needs; the
 * rest is under subpaths:
 *
 *   @shoal/backends/ring      the collectives over a process group (ring, direct, hierarchical, fusion)
 *   @shoal/backends/ps        the parameter server's layers (key layout, updaters, KVServer/KVWorker internals)
 *   @shoal/backends/testing   test kits: the GradientSync compliance suite, in-memory groups and ps clusters
 */
export type { DenseTensor, EngineCapabilities, GradientSync, RowSparseTensor } from './api.js';
// Engines
export { RingSync, type RingSyncOptions } from './ring/ring-sync.js';
export { PsSync, type PsSyncOptions } from './ps/ps-sync.js';
export { HybridSync } from './hybrid/hybrid-sync.js';
export { LocalSync, mergeRowSparse } from './local/local-sync.js';
export { mergeRows } from './row-sparse.js';
// Parameter servers
export { KVServer, type KVServerOptions, type KVServerStats } from './ps/kv-server.js';
export { defaultServerName, KVWorker, type ConnectKVWorkerOptions, type KVWorkerOptions } from './ps/kv-worker.js';
export { startPsServers, type StartPsServersOptions } from './ps/launch-servers.js';
export { psWorkerOf, ServerTables, type ServerTableSpec, type ServerTablesOptions, type TableRows } from './ps/server-tables.js';
export type { Dtype, KeySpec } from './ps/key-layout.js';
// Embedding tables held on the servers or replicated, and the servers' optimizers run locally
export { EmbeddingTables, type EmbeddingTablesOptions, type TablesState } from './tables/embedding-tables.js';
export type { KeyExport } from './ps/worker/key-state.js';
export { LocalOptimizer, type OptimizerSpec, type ParameterState } from './tables/local-optimizer.js';
export { fuseTables, splitTables } from './tables/fuse-tables.js';
export {
  adagradUpdater,
  adamUpdater,
  addUpdater,
  assignUpdater,
  createUpdater,
  sgdUpdater,
  type ServerUpdater,
  type UpdateContext,
  type UpdaterSpec,
} from './ps/updaters.js';
// Same-host collective and the hierarchical topology
export { ShmCollective, shmCollectiveAvailable, type CollectiveOp, type ShmCollectiveOptions } from './shm/shm-collective.js';
export {
  connectHierarchical,
  connectHierarchicalIfHelpful,
  discoverHosts,
  type HierarchicalGroup,
  type HierarchicalGroupOptions,
} from './ring/allreduce-hierarchical.js';
// Elastic membership (shoal run --elastic)
export { attachElastic, elasticOf, type CommitStore, type ElasticControl, type LostWorker, type MembershipChange } from './elastic.js';
// Per-job telemetry the Trainer's TensorBoard callback reads from its engine
export { attachJobTelemetry, jobTelemetryOf, type JobTelemetry } from './job-telemetry.js';
