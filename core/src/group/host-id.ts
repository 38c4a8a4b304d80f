import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * This machine's identity for grouping ranks by host: the hostname plus the kernel boot id, so two containers
 * that share a hostname but not a kernel (and so not /dev/shm) are told apart. Read at call time, never cached
 * in module state.
 */
export function localHostId(): string {
  let boot = '';
  try {
    boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    /* not Linux: the hostname alone */
  }
  return boot ? `${hostname()}/${boot}` : hostname();
}
