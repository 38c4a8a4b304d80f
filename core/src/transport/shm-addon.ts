// The shared-memory addon's surface (core/native/shm), its loader, and the /dev/shm housekeeping of a job's
// pair segments, for the shm transport (shm.ts) and the named regions (shared-region.ts).
import { readdirSync, unlinkSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Errors } from '../errors.js';

export interface NativeSegment {
  /** Listener: true once a dialer claimed the segment and its wake socket is accepted. */
  attached(): boolean;
  start(onSend: (kind: number, id: number, err: string | undefined, code: string | undefined) => void, onReadable: (eof: boolean) => void): void;
  /** Returns true when the message was copied into the ring synchronously (no completion event follows). */
  send(data: Uint8Array, id: number): boolean;
  /** A whole small message; or the length of a larger one whose header was consumed; -1 nothing yet; -2 closed. */
  take(smallMax: number): Uint8Array | number;
  readInto(dst: Uint8Array, offset: number): number;
  arm(): boolean;
  spin(micros: number): boolean;
  alloc(bytes: number): Uint8Array;
  close(): void;
  info(): { name: string; side: number; capacity: number; pid: number; peerPid: number };
}
/** The shared-memory addon (core/native/shm): pair segments, malloc tuning, named regions (`shared-region.ts`). */
export interface ShmAddon {
  tuneMalloc(bytes: number): boolean;
  Segment: new (name: string, create: boolean, ringBytes: number, maxMessage: number, spin: number, poolBytes: number) => NativeSegment;
  mapRegion(name: string, bytes: number, create: boolean): ArrayBuffer;
  unlinkRegion(name: string): boolean;
}

export function loadShmAddon(): ShmAddon {
  const require = createRequire(import.meta.url);
  try {
    return require('../../native/shm/build/Release/shoal_shm.node') as ShmAddon;
  } catch (e) {
    throw Errors.transport('shm', 'the shared-memory addon is not built: run `npm rebuild @shoal/core` (installed package) or `npm run build:native` (checkout)', e);
  }
}

const SHM_DIR = '/dev/shm';

/** Remove segments left by a job (a listener killed before its peer attached). Returns how many. */
export function removeStaleSegments(prefix: string): number {
  let n = 0;
  let names: string[] = [];
  try {
    names = readdirSync(SHM_DIR);
  } catch {
    return 0;
  }
  for (const name of names) {
    if (!name.startsWith(`shoal-${prefix}-`)) continue;
    try {
      unlinkSync(`${SHM_DIR}/${name}`);
      n++;
    } catch {
      /* already gone */
    }
  }
  return n;
}

/** List this job's segments currently visible in /dev/shm (for tests and cleanup checks). */
export function listSegments(prefix: string): string[] {
  try {
    return readdirSync(SHM_DIR).filter((n) => n.startsWith(`shoal-${prefix}-`));
  } catch {
    return [];
  }
}
