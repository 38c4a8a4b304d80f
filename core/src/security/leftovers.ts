import { readdirSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { processAlive as alive } from '../util.js';

/**
 * Names a launcher's job leaves on the host: shared-memory segments and regions in /dev/shm and unix socket files
 * in the temporary directory, all named `shoal-job-<launcher pid>-...` (`shoal run`'s job ids are
 * `job-<pid>-<time>`; its ipc fallback names are `shoal-<pid>-...`). Every name is removed by its owner as soon
 * as both ends hold it; a killed process cannot, so:
 * - the processes of a job whose launcher died sweep its names on their way out (`joinJob`'s parent watch, the
 *   actor host), and
 * - every launch sweeps the names of jobs whose launcher is gone.
 * Only names owned by this user whose launcher pid is not alive are touched.
 */
const NAME = /^shoal-(?:job-)?(\d+)-/;

export interface SweepOptions {
  /** Sweep only the names of this launcher pid (a job whose launcher just died); default: every dead one. */
  ownerPid?: number;
  /** Directories to look in. Default /dev/shm and os.tmpdir(). */
  dirs?: readonly string[];
}

/** Remove leftover names of dead launchers' jobs; returns the paths removed. Never throws. */
export function sweepLeftovers(o: SweepOptions = {}): string[] {
  const removed: string[] = [];
  const uid = process.getuid?.();
  for (const dir of o.dirs ?? ['/dev/shm', tmpdir()]) {
    let names: string[];
    try {
      names = readdirSync(dir);
    } catch {
      continue;
    }
    for (const name of names) {
      const m = NAME.exec(name);
      if (!m) continue;
      const pid = Number(m[1]);
      if (o.ownerPid !== undefined ? pid !== o.ownerPid : pid === process.pid) continue;
      if (o.ownerPid === undefined && alive(pid)) continue;
      const path = join(dir, name);
      try {
        const st = statSync(path);
        if (st.isDirectory() || (uid !== undefined && st.uid !== uid)) continue;
        unlinkSync(path);
        removed.push(path);
      } catch {
        /* gone meanwhile, or not ours */
      }
    }
  }
  return removed;
}
