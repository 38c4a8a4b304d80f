/**
 * @shoal/backends/testing: test kits (the compliance suite imports uvu, a dev dependency: never from a runtime
 * entry point). `gradientSyncCompliance` runs the GradientSync contract against any engine; `memoryGroups` and
 * `memoryPsCluster` build in-process ring groups and parameter-server clusters over the memory transport.
 */
export { gradientSyncCompliance } from './compliance.js';
export { memoryGroups, onAllRanks } from '../ring/memory-groups.js';
export { memoryPsCluster, type MemoryPsCluster } from '../ps/testing/memory-cluster.js';
export { allEqual, ones } from '../ps/testing/values.js';
