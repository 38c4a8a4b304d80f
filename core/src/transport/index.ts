/** @shoal/core/transport: every transport and what the packages above core need of them. */
export { DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type ListenOptions, type Listener, type Transport } from './transport.js';
export { MemoryNetwork } from './memory.js';
export { createNetTransport, NetTransport, type NetTransportOptions } from './net.js';
export { createNngTransport, NngTransport, type NngTransportOptions } from './nng.js';
export { listSegments, removeStaleSegments } from './shm-addon.js';
export { shmTransport, type ShmOptions } from './shm.js';
export { createSharedRegion, openSharedRegion, unlinkSharedRegion, type SharedRegion } from './shared-region.js';
export { transportFromRef, type TransportFactoryRef } from './factory.js';
