/** @shoal/backends/ring: the collectives over a process group, one file each (see docs/algorithms.md). */
export { allgatherBytes, allgatherRing } from './allgather.js';
export { allreduceDirect } from './allreduce-direct.js';
export {
  allreduceHierarchical,
  connectHierarchical,
  connectHierarchicalIfHelpful,
  discoverHosts,
  hierarchyHelps,
  type HierarchicalAllreduceOptions,
  type HierarchicalGroup,
  type HierarchicalGroupOptions,
} from './allreduce-hierarchical.js';
export { allreduceRing, type AllreduceOp, type AllreduceOptions } from './allreduce-ring.js';
export { barrierRing } from './barrier.js';
export { broadcastRing, type BroadcastOptions } from './broadcast.js';
export { DEFAULT_FUSION_BYTES, TensorFusion, type FusionBatch, type TensorListSignature } from './fusion.js';
export { RingSync, type RingSyncOptions } from './ring-sync.js';
