import { arg, type ArgCheck } from '@shoal/core/actor';
import { Errors, type FloatArray } from '@shoal/core';
import type { KeySlice, KeySpec } from './key-layout.js';

/**
 * The parameter server's wire protocol (ps-lite's message layer): every request a worker sends to a server shard,
 * its arguments and its reply, typed once and used by both sides. `KVServer` implements `PsServerApi` (so its
 * methods cannot drift from these types) and declares `PS_REMOTE` as its remote surface (the actor runtime checks
 * every request's arguments against it before the method runs); `KVWorker` sends requests through
 * `ServerLinks.call`, typed by the same tables.
 *
 * Sender: every request that acts for a worker names its `rank`, and the server checks that against the rank its
 * connection bound with `hello(rank)`: a connection cannot act as another worker (`ERR_STATE`), and one that said
 * no hello with a rank cannot act as any.
 *
 * Counters: a push carries the worker's count of earlier pushes of the key (so a resend is applied once); a pull
 * carries `need` (sync: rounds applied, async: the worker's own pushes applied) and waits until the server has
 * reached it.
 */

/** What `hello` returns: the server's configuration and where it runs. */
export interface ServerHello {
  serverIndex: number;
  numServers: number;
  numWorkers: number;
  mode: string;
  bigKeyBound: number;
  /** The largest message this connection may send before it declares keys (`declare`), bytes. */
  callerBound: number;
  epoch: number;
  pid: number;
  hostId: string;
}

/** One key slice's place in a worker's staging region (byte offsets of its gradient and output). */
export interface SharedEntry {
  key: string;
  grad: number;
  out: number;
}

/** Rows of a row-sparse key: global row ids and `rowIds.length * rowSize` packed values. */
export interface RowsReply {
  rowIds: Int32Array;
  rows: FloatArray;
}

export interface ServerStats {
  serverIndex: number;
  keys: number;
  pushes: number;
  pulls: number;
  updates: number;
  checkpoints: number;
  /** Dense push slices received straight into the server's receive buffers (transports with `recvInto`). */
  directPushes: number;
  restoredFrom: string | null;
  /** CPU time of the server's process so far (user + system), microseconds. */
  cpuUs: number;
  /** Times the server's process went to sleep so far (voluntary context switches): its wake-ups. */
  sleeps: number;
}

/** The requests a `guarded` request may carry, run once the collective's signatures agree on the server. */
export type GuardedCall = ['pushPull', PsRequests['pushPull']] | ['rowSparsePush', PsRequests['rowSparsePush']] | ['rowSparsePull', PsRequests['rowSparsePull']];
export const GUARDED_METHODS = ['pushPull', 'rowSparsePush', 'rowSparsePull'] as const;

/** Requests: method -> arguments. `null` gradients / a `shared` flag: the values are in the staging buffers. */
export interface PsRequests {
  hello: [rank?: number];
  attachShared: [rank: number, name: string, bytes: number, entries: SharedEntry[]];
  /** Keys this connection will send values of: the server raises its bound on the connection's messages (`server/caller-bounds.ts`). */
  declare: [rank: number, specs: KeySpec[]];
  /** `restore` (rank 0, optional): per key, the optimizer state and round count of a checkpoint (`KeyState`). */
  init: [rank: number, specs: KeySpec[], slices: KeySlice[], values: (FloatArray | null)[] | null, restore?: (KeyState | null)[] | null];
  push: [rank: number, keys: string[], counters: number[], grads: (FloatArray | null)[]];
  pushPull: [rank: number, keys: string[], counters: number[], grads: (FloatArray | null)[], shared?: boolean];
  pull: [rank: number, keys: string[], needs: number[], shared?: boolean];
  rowSparsePush: [rank: number, key: string, counter: number, rowIds: Int32Array, rows: FloatArray];
  /** `rowIds` null: the merged rows of the last completed round. */
  rowSparsePull: [rank: number, key: string, need: number, rowIds: Int32Array | null];
  /** `op`: the operation kind; workers that reach one tag with different kinds all get ERR_MISMATCH at once. */
  gather: [rank: number, tag: string, value: unknown, op?: string];
  /**
   * A collective in one round trip: join gather `tag` (operation `op`) with this worker's signature (see
   * `signature.ts`), and once every worker has, run `calls` in order if the signatures agree (each as its own
   * request would). Every server that gets a part of the collective checks the same signatures.
   */
  guarded: [rank: number, tag: string, op: string, sig: unknown, calls: GuardedCall[]];
  checkpoint: [];
  /** A copy of this server's slice of `key`: value, optimizer state and rounds applied. */
  exportKey: [key: string];
  stats: [];
  versions: [keys: string[]];
}

/** Replies: method -> value (dense values are null where they went into the staging buffers). */
export interface PsReplies {
  hello: ServerHello;
  attachShared: { keys: number };
  /** The bound on this connection's messages now, bytes. */
  declare: { bound: number };
  init: { resume: number[] };
  push: void;
  pushPull: (FloatArray | null)[];
  pull: (FloatArray | null)[];
  rowSparsePush: void;
  rowSparsePull: RowsReply;
  gather: unknown[];
  /** `all`: the gathered signatures in rank order; `values`: the calls' replies, or null when they disagree (nothing ran). */
  guarded: { all: unknown[]; values: unknown[] | null };
  checkpoint: { path: string; bytes: number };
  exportKey: { data: FloatArray } & KeyState;
  stats: ServerStats;
  versions: { version: number[]; clock: number[][] };
}

/** A key slice's optimizer state (named arrays, as the updater keeps them) and its updates applied (`version`). */
export interface KeyState {
  state: Record<string, FloatArray>;
  version: number;
}

export type PsMethod = keyof PsRequests;

/** The server side of the protocol: a method per request (a reply may be immediate or a promise). */
export type PsServerApi = { [M in PsMethod]: (...args: PsRequests[M]) => PsReplies[M] | Promise<PsReplies[M]> };

const rank = arg.int(0, 1 << 20);
const count = arg.int();
const keyName = arg.string(1024);
const keys = arg.array(keyName, 1 << 20);
const counts = arg.array(count, 1 << 20);
const floats = arg.floatArray();
const keySpec = arg.object({
  key: keyName,
  size: arg.int(0),
  dtype: arg.optional(arg.oneOf('float32', 'float64')),
  rows: arg.optional(arg.object({ numRows: arg.int(1), rowSize: arg.int(1) })),
  update: arg.optional(arg.oneOf('optimizer', 'assign')),
  updater: arg.optional(arg.object({ type: arg.oneOf('assign', 'add', 'sgd', 'adam', 'adagrad') })),
});
/** A `KeyState`: float arrays by name (at most 16) and a round count. */
const keyState: ArgCheck = (v, where) => {
  arg.object({ version: count, state: arg.object({}) })(v, where);
  const st = (v as KeyState).state;
  const names = Object.keys(st);
  if (names.length > 16) throw Errors.invalidArg(`${where}.state`, `must hold at most 16 arrays, got ${names.length}`);
  for (const n of names) floats(st[n], `${where}.state.${n}`);
};
const keySlice = arg.object({ server: count, start: count, end: count, rowStart: arg.optional(count), rowEnd: arg.optional(count) });

/** The calls of a `guarded` request: each a method of `GUARDED_METHODS` with arguments that pass its own checks. */
const guardedCalls: ArgCheck = (v, where) => {
  arg.array(arg.array(arg.any(), 2), 16)(v, where);
  (v as unknown[][]).forEach((c, i) => {
    arg.oneOf(...GUARDED_METHODS)(c[0], `${where}[${i}][0]`);
    const checks = PS_REMOTE[c[0] as (typeof GUARDED_METHODS)[number]];
    const args = c[1];
    if (!Array.isArray(args) || args.length > checks.length) throw Errors.invalidArg(`${where}[${i}][1]`, `must be the arguments of ${String(c[0])}`);
    checks.forEach((check, j) => check(args[j], `${where}[${i}][1][${j}]`));
  });
};

/** The server's remote surface: one check per argument of every request (see `remoteMethods` in core). */
export const PS_REMOTE: { readonly [M in PsMethod]: readonly ArgCheck[] } = Object.freeze({
  hello: [arg.optional(rank)],
  attachShared: [rank, arg.string(255), arg.int(1), arg.array(arg.object({ key: keyName, grad: count, out: count }), 1 << 20)],
  declare: [rank, arg.array(keySpec, 1 << 20)],
  init: [rank, arg.array(keySpec, 1 << 20), arg.array(keySlice, 1 << 20), arg.nullable(arg.array(arg.nullable(floats), 1 << 20)), arg.optional(arg.nullable(arg.array(arg.nullable(keyState), 1 << 20)))],
  push: [rank, keys, counts, arg.array(arg.nullable(floats), 1 << 20)],
  pushPull: [rank, keys, counts, arg.array(arg.nullable(floats), 1 << 20), arg.optional(arg.boolean())],
  pull: [rank, keys, counts, arg.optional(arg.boolean())],
  rowSparsePush: [rank, keyName, count, arg.int32Array(), floats],
  rowSparsePull: [rank, keyName, count, arg.nullable(arg.int32Array())],
  gather: [rank, arg.string(1024), arg.any(), arg.optional(arg.string(256))],
  guarded: [rank, arg.string(1024), arg.string(256), arg.any(), guardedCalls],
  checkpoint: [],
  exportKey: [keyName],
  stats: [],
  versions: [keys],
});
