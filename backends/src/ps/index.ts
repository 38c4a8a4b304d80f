export * from './key-layout.js';
export * from './updaters.js';
export * from './kv-server.js';
export * from './kv-worker.js';
export * from './launch-servers.js';
export * from './ps-sync.js';
