/** @shoal/core/store: rendezvous stores. */
export { asBytes, asText, PrefixStore, type Store } from './store.js';
export { MemoryStore } from './memory.js';
export { connectTcpStore, TcpStore, type TcpStoreOptions } from './tcp.js';
export { TcpStoreServer, type TcpStoreServerOptions } from './tcp-server.js';
