/** @shoal/core/group: the process group the collectives run over (gloo's Context). */
export { connectGroup } from './connect-group.js';
export { HEADER_BYTES, ProcessGroup, SPLIT_FLAG, Tags, type ExpectedHeader, type GroupStats, type Header, type ProcessGroupOptions } from './process-group.js';
export { localHostId } from './host-id.js';
