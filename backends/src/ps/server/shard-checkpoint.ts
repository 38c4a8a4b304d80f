import { closeSync, fsyncSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { decodeMessage, encodeMessage } from '@shoal/core/actor';
import { Errors, type FloatArray } from '@shoal/core';
import type { KeySlice, KeySpec } from '../key-layout.js';
import type { Slot } from './slot.js';
import type { Ack } from './sync-round.js';

/** A server shard on disk: every key slice with its value, optimizer state and progress. */
export interface ShardFile {
  format: 'shoal-ps-shard';
  version: 1;
  serverIndex: number;
  numServers: number;
  numWorkers: number;
  mode: string;
  keys: { spec: KeySpec; slice: KeySlice; data: FloatArray; state: Record<string, FloatArray>; version: number; clock: number[] }[];
}

/** Write `file` to `path` atomically (temp file, fsync, rename, directory fsync). Returns its size. */
export function writeShard(path: string, file: ShardFile): number {
  const frame = encodeMessage(file);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    let off = 0;
    while (off < frame.byteLength) off += writeSync(fd, frame, off, frame.byteLength - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  try {
    const dfd = openSync(dirname(path), 'r');
    fsyncSync(dfd);
    closeSync(dfd);
  } catch {
    // directory fsync is not supported everywhere; the rename is still atomic
  }
  return frame.byteLength;
}

/** Read the shard at `path`, checking it was written by the same server of the same job shape (ERR_DATA). */
export function readShard(path: string, me: { serverIndex: number; numServers: number; numWorkers: number }): ShardFile {
  const bytes = readFileSync(path);
  let f: ShardFile;
  try {
    f = decodeMessage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)) as ShardFile;
  } catch (e) {
    throw Errors.data(path, `is not a readable parameter-server checkpoint (${(e as Error).message})`);
  }
  if (f.format !== 'shoal-ps-shard') throw Errors.data(path, 'is not a shoal parameter-server checkpoint');
  if (f.serverIndex !== me.serverIndex || f.numServers !== me.numServers || f.numWorkers !== me.numWorkers) {
    throw Errors.data(path, `was written by server ${f.serverIndex}/${f.numServers} for ${f.numWorkers} workers, this is server ${me.serverIndex}/${me.numServers} for ${me.numWorkers}`);
  }
  return f;
}

/** The identity a shard is written under and checked against on restore. */
export interface ShardOwner {
  serverIndex: number;
  numServers: number;
  numWorkers: number;
  mode: string;
}

/** Write every slot of server `me` to `path` (see `writeShard`). Returns the file's size. */
export function writeSlots(path: string, me: ShardOwner, slots: Iterable<Slot>): number {
  return writeShard(path, {
    format: 'shoal-ps-shard',
    version: 1,
    serverIndex: me.serverIndex,
    numServers: me.numServers,
    numWorkers: me.numWorkers,
    mode: me.mode,
    keys: [...slots].map((s) => ({ spec: s.spec, slice: s.slice, data: s.data, state: s.state, version: s.version, clock: s.clock })),
  });
}

/** The slots saved at `path` by server `me`, each made by `make` and given its saved progress and state. */
export function readSlots(path: string, me: ShardOwner, make: (spec: KeySpec, slice: KeySlice, data: FloatArray) => Slot): Slot[] {
  return readShard(path, me).keys.map((k) => {
    const slot = make(k.spec, k.slice, k.data.slice());
    slot.version = k.version;
    slot.clock = [...k.clock];
    for (const [n, v] of Object.entries(k.state)) slot.state[n] = v.slice();
    return slot;
  });
}

/**
 * Acknowledgements, after a durable write when `durable` (group commit: one write, in a later turn, covers every
 * update applied meanwhile), else at once.
 */
export class GroupCommit {
  private pending: Ack[] = [];
  private scheduled = false;

  constructor(
    private readonly durable: boolean,
    private readonly write: () => void,
  ) {}

  acknowledge(acks: readonly Ack[]): void {
    if (!this.durable) {
      for (const a of acks) a.resolve();
      return;
    }
    this.pending.push(...acks);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      const batch = this.pending;
      this.pending = [];
      try {
        this.write();
      } catch (e) {
        for (const a of batch) a.reject(e);
        return;
      }
      for (const a of batch) a.resolve();
    });
  }
}
