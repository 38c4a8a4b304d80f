/** @shoal/core/store: rendezvous stores. */
export { asBytes, asText, PrefixStore, type Store } from './store.js';
export { MemoryStore } from './memory.js';
export { connectTcpStore, TcpStore, TcpStoreServer, type TcpStoreOptions, type TcpStoreServerOptions } from './tcp.js';
