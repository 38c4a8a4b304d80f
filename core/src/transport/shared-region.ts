import { randomBytes } from 'node:crypto';
import { Errors } from '../errors.js';
import { loadShmAddon, type ShmAddon } from './shm-addon.js';

/**
 * A named POSIX shared-memory region mapped into this process as an ArrayBuffer (core/native/shm): the
 * parameter server's same-host data plane maps each worker's staging buffers this way. The mapping lives as long
 * as the ArrayBuffer (V8 unmaps it when it is collected); the name only until `unlink`, after which no new process
 * can open it but every mapping stays valid. Creating reserves the pages, so a full /dev/shm fails here with
 * ERR_TRANSPORT instead of a SIGBUS later.
 */
export interface SharedRegion {
  readonly name: string;
  readonly bytes: number;
  readonly buffer: ArrayBuffer;
  /** Remove the name (idempotent). Mappings stay valid. */
  unlink(): void;
}

type RegionAddon = Pick<ShmAddon, 'mapRegion' | 'unlinkRegion'>;
const addon = (): RegionAddon => loadShmAddon();

function region(a: RegionAddon, name: string, buffer: ArrayBuffer): SharedRegion {
  let linked = true;
  return {
    name,
    bytes: buffer.byteLength,
    buffer,
    unlink() {
      if (!linked) return;
      linked = false;
      a.unlinkRegion(name);
    },
  };
}

/** Create a region of `bytes` (zero-filled) under a fresh name starting `shoal-${prefix}-`. */
export function createSharedRegion(prefix: string, bytes: number): SharedRegion {
  if (!/^[A-Za-z0-9._-]{1,100}$/.test(prefix)) throw Errors.invalidArg('prefix', `must be 1-100 of [A-Za-z0-9._-], got ${JSON.stringify(prefix)}`);
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw Errors.invalidArg('bytes', `must be a positive integer, got ${bytes}`);
  const a = addon();
  const name = `/shoal-${prefix}-${process.pid}-${randomBytes(6).toString('hex')}`;
  try {
    return region(a, name, a.mapRegion(name, bytes, true));
  } catch (e) {
    throw Errors.transport('shm', `cannot create shared region ${name} of ${bytes} bytes: ${(e as Error).message}`, e);
  }
}

/** Region names this module makes and accepts: `/shoal-` and a safe tail. */
function checkName(name: string): void {
  if (typeof name !== 'string' || !/^\/shoal-[A-Za-z0-9._-]{1,200}$/.test(name)) throw Errors.invalidArg('name', `is not a shoal region name: ${JSON.stringify(name)}`);
}

/** Remove a region's name (as `SharedRegion.unlink`, for a name received from elsewhere); false if it was gone. */
export function unlinkSharedRegion(name: string): boolean {
  checkName(name);
  return addon().unlinkRegion(name);
}

/** Map an existing region, checking its size. */
export function openSharedRegion(name: string, bytes: number): SharedRegion {
  checkName(name);
  if (!Number.isSafeInteger(bytes) || bytes < 1) throw Errors.invalidArg('bytes', `must be a positive integer, got ${JSON.stringify(bytes)}`);
  const a = addon();
  try {
    return region(a, name, a.mapRegion(name, bytes, false));
  } catch (e) {
    throw Errors.transport('shm', `cannot map shared region ${name}: ${(e as Error).message}`, e);
  }
}
