export * from './errors.js';
export * from './util.js';
export * from './transport/transport.js';
export * from './transport/memory.js';
export * from './store/store.js';
export * from './store/memory.js';
export * from './config.js';
export * from './transport/shm.js';
