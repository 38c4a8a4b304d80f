export * from './codec.js';
export * from './rpc.js';
export * from './module-ref.js';
export * from './actor-server.js';
export * from './actor-handle.js';
export * from './actor-host.js';
export * from './spawn.js';
export * from './net-remote.js';
