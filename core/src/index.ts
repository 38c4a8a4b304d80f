/**
 * @shoal/core: the runtime every other shoal package builds on. This entry names what a user of the runtime
 * needs; the rest is under subpaths, for the packages above core and for tests:
 *
 *   @shoal/core/transport   transports (memory, net, nng, shm), shared regions, segment housekeeping
 *   @shoal/core/store       rendezvous stores (memory, TCP) and their helpers
 *   @shoal/core/group       the process group (gloo's Context): pairing, message tags and headers
 *   @shoal/core/actor       the actor runtime: RPC, codec, hosting, supervision
 *   @shoal/core/kernels     reduction kernels (native addon or JS) and the addon loader
 *   @shoal/core/telemetry   the timeline (Chrome trace events per rank) and its merge
 *   @shoal/core/util        small async helpers (deadlines, deferreds, waiter queues, seeds, hashing)
 *   @shoal/core/testing     test kits: the transport conformance suite, a counter actor
 */
export { Errors, InvalidArgError, isShoalError, ShoalError, type ShoalErrorCode } from './errors.js';
export { parseWorkerOptions, type WorkerOptions } from './config.js';
export { mixSeed, Rng } from './rng.js';
export { sleep } from './util.js';
// Stores
export { asText, type Store } from './store/store.js';
export { MemoryStore } from './store/memory.js';
export { TcpStore, type TcpStoreOptions } from './store/tcp.js';
export { TcpStoreServer, type TcpStoreServerOptions } from './store/tcp-server.js';
// Transports
export { DEFAULT_TIMEOUT_MS, type Connection, type IoOptions, type ListenOptions, type Listener, type Transport } from './transport/transport.js';
export { MemoryNetwork } from './transport/memory.js';
export { createNetTransport, NetTransport, type NetTransportOptions } from './transport/net.js';
export { createNngTransport, NngTransport, type NngTransportOptions } from './transport/nng.js';
export { shmTransport, type ShmOptions } from './transport/shm.js';
export { transportFromRef, type TransportFactoryRef } from './transport/factory.js';
// Process group
export { connectGroup } from './group/connect-group.js';
export { ProcessGroup, type ProcessGroupOptions } from './group/process-group.js';
export { localHostId } from './group/host-id.js';
// Kernels
export { loadKernels, type FloatArray, type LoadKernelsOptions, type NumericArray, type ReduceKernels, type ReduceOp } from './kernels/reduce-kernels.js';
// Actors
export { ActorSupervisor, type ActorExit, type SpawnActorOptions } from './actor/spawn.js';
export { ActorClient, type ActorHandle } from './actor/actor-handle.js';
export { netRemote, shmRemote } from './actor/net-remote.js';
export type { ModuleRef } from './actor/module-ref.js';
export type { ActorContext } from './actor/actor-host.js';
// Job identity (authentication of every connection)
export { AuthLog, JOB_SECRET_ENV, JobAuth } from './security/job-auth.js';
export { JOB_TLS_ENV, JobTls } from './security/job-tls.js';
