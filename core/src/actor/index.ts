/** @shoal/core/actor: the actor runtime (RPC over any Transport, actors found through the Store, supervision). */
export { decodeMessage, encodeMessage, externalRef, type EncodeOptions, type EncodedMessage } from './codec.js';
export { type CallOptions, type RemoteErrorInfo, RpcClient, type RpcClientOptions, type RpcStats } from './rpc.js';
export { instantiate, type ModuleRef } from './module-ref.js';
export { actorEpoch, actorKeys, ActorServer, currentCaller, raiseCallerBound, type CallerBound, type ServeActorOptions } from './actor-server.js';
export { ActorClient, type ActorHandle, type ActorMethods, type ConnectActorOptions } from './actor-handle.js';
export { hostActor, type ActorContext, type ActorHostSpec, type ActorLifecycle } from './actor-host.js';
export { ActorSupervisor, type ActorExit, type SpawnActorOptions } from './spawn.js';
export { ACTOR_SHM_RING_BYTES, netRemote, shmRemote } from './net-remote.js';
export { arg, checkArgs, remoteMethods, remoteSpecOf, type ArgCheck, type RemoteSpec } from './remote.js';
