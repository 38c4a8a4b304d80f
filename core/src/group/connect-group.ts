import { Errors } from '../errors.js';
import { ProcessGroup, type ProcessGroupOptions } from './process-group.js';

/**
 * Create a process group and connect both ring neighbours before returning (every rank of the job must call
 * this within `timeoutMs`). Other pairs are still created lazily on first use.
 *
 * On failure the half-built group is closed and the error (ERR_TIMEOUT naming the missing store key or the
 * URL that could not be dialled) is rethrown. `signal` gives the connect up: the group closes at once (pairs still
 * opening included) and the call rejects with ERR_ABORTED.
 */
export async function connectGroup(opts: ProcessGroupOptions & { signal?: AbortSignal }): Promise<ProcessGroup> {
  const { signal, ...rest } = opts;
  if (signal?.aborted) throw Errors.aborted(`connecting rank ${opts.rank}'s group`, signal.reason);
  const g = new ProcessGroup(rest);
  // An abort closes the group at once: its pairs still opening give up (their waits end with the group).
  const onAbort = () => void g.close().catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    await g.connectRing();
    if (signal?.aborted) throw Errors.aborted(`connecting rank ${opts.rank}'s group`, signal.reason);
  } catch (e) {
    await g.close();
    if (signal?.aborted) throw Errors.aborted(`connecting rank ${opts.rank}'s group`, signal.reason);
    throw e;
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  return g;
}
