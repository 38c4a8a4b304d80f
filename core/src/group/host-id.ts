import { readFileSync, readlinkSync } from 'node:fs';
import { hostname } from 'node:os';

/**
 * This machine's identity for grouping ranks by host: the hostname, the kernel boot id (two containers that share
 * a hostname but not a kernel are told apart) and this process's PID and mount namespaces (two containers on one
 * kernel, with the host's network and hostname, still see different /dev/shm mounts and cannot check each other's
 * pids: they count as different hosts, and talk over the network transport). Processes and worker threads of one
 * container share all of it. Read at call time, never cached in module state.
 */
export function localHostId(): string {
  let boot = '';
  try {
    boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  } catch {
    /* not Linux: the hostname alone */
  }
  if (!boot) return hostname();
  const ns = ['pid', 'mnt'].map((k) => {
    try {
      return readlinkSync(`/proc/self/ns/${k}`); // e.g. 'pid:[4026531836]'
    } catch {
      return '';
    }
  });
  return [hostname(), boot, ...ns.filter((x) => x !== '')].join('/');
}
