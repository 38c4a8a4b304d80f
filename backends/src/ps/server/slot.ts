import type { FloatArray } from '@shoal/core';
import type { KeySlice, KeySpec } from '../key-layout.js';
import type { ServerUpdater } from '../updaters.js';
import { ReceiveBuffers } from './receive-buffers.js';
import { RowMerge } from './row-merge.js';
import { SharedSlot } from './shared-plane.js';
import { SyncRound } from './sync-round.js';
import { WaitQueue } from './waiters.js';

/**
 * One key slice a server shard holds: its value and optimizer state, its progress (`version`, per-worker `clock`),
 * and one part per concern: the sync round in progress, the receive buffers and shared views (dense keys), the
 * row merge (row-sparse keys), and the requests waiting on it.
 */
export interface Slot {
  spec: KeySpec;
  slice: KeySlice;
  data: FloatArray;
  state: Record<string, FloatArray>;
  /** Updates applied (sync: rounds; async: pushes from all workers). */
  version: number;
  /** Pushes applied per worker (async clocks; sync: pushes merged). */
  clock: number[];
  updater: ServerUpdater;
  round: SyncRound;
  rx: ReceiveBuffers;
  shared: SharedSlot;
  rows: RowMerge;
  waiters: WaitQueue;
}

export function newSlot(spec: KeySpec, slice: KeySlice, data: FloatArray, updater: ServerUpdater, numWorkers: number, timeoutMs: number): Slot {
  return {
    spec,
    slice,
    data,
    state: {},
    version: 0,
    clock: new Array<number>(numWorkers).fill(0),
    updater,
    round: new SyncRound(numWorkers),
    rx: new ReceiveBuffers(numWorkers),
    shared: new SharedSlot(numWorkers),
    rows: new RowMerge(spec, slice),
    waiters: new WaitQueue(timeoutMs),
  };
}
