/**
 * The parameter-server backend (MXNet KVStore / ps-lite semantics), in layers:
 *
 *   PsSync (GradientSync)            ps-sync.ts       allreduce = push grads + pull sum; broadcast = init + pull
 *   ServerTables                     server-tables.ts embedding tables held on the servers: pull rows, push row grads,
 *                                                     each key with its own server optimizer (KeySpec.updater)
 *   KVWorker (API, request tracking) kv-worker.ts     batching per server, per-key push counters
 *     worker/                        server-links.ts  typed requests, fail fast or resend after a restart
 *                                    staging.ts       same-host staging buffers (shared-memory data plane)
 *                                    pull-order.ts    a push waits for the pulls of its keys before it
 *   protocol (messages)              protocol.ts      typed requests/replies of both sides, the remote surface
 *   KeyLayout (Slicer)               key-layout.ts    small keys hashed, big keys split, row-sparse by row range
 *   KVServer (actor + ReqHandle)     kv-server.ts     checks requests (sender = the connection's rank), routes
 *     server/                        rounds.ts        sync rounds, async clocks, staleness, pull waits
 *                                    sync-round.ts, receive-buffers.ts, row-merge.ts, dense-update.ts,
 *                                    shared-plane.ts, gathers.ts, members.ts (lost workers), waiters.ts,
 *                                    shard-checkpoint.ts (atomic shard file, group commit)
 *   ServerUpdater (policy)           updaters.ts      assign | add | sgd | adam | adagrad | your module
 *   actor runtime (core/src/actor)   RPC over any Transport, actors found through the Store, supervision
 *
 * Bytes on the wire per worker and round (S servers, model of B bytes, all keys dense):
 *   push: B + frame headers (~100 B per server + ~40 B per key), pull: the same back. A big key's slices go to
 *   all servers in parallel, so each server link carries about B / S.
 * Row-sparse, k distinct touched rows of r bytes: push k*r + 4k (row ids), pull k*r (+ 4k of ids sent).
 */
export * from './key-layout.js';
export * from './updaters.js';
export * from './kv-server.js';
export type { PsMethod, PsReplies, PsRequests, RowsReply, ServerHello, ServerStats, SharedEntry } from './protocol.js';
export * from './kv-worker.js';
export * from './launch-servers.js';
export * from './ps-sync.js';
export * from './server-tables.js';
