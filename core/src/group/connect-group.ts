import { ProcessGroup, type ProcessGroupOptions } from './process-group.js';

/**
 * Create a process group and connect both ring neighbours before returning (every rank of the job must call
 * this within `timeoutMs`). Other pairs are still created lazily on first use.
 *
 * On failure the half-built group is closed and the error (ERR_TIMEOUT naming the missing store key or the
 * URL that could not be dialled) is rethrown.
 */
export async function connectGroup(opts: ProcessGroupOptions): Promise<ProcessGroup> {
  const g = new ProcessGroup(opts);
  try {
    await g.connectRing();
  } catch (e) {
    await g.close();
    throw e;
  }
  return g;
}
