import type { GradientSync } from '@shoal/backends';
import { RingSync } from '@shoal/backends';
import * as core from '@shoal/core';
import { Errors } from '@shoal/core';
import * as wrappers from '@shoal/wrappers';

interface JobCtx {
  options: core.WorkerOptions; store: core.Store; transport: core.Transport; listenUrl: string; close(): Promise<void>;
}

/**
 * Join the job `shoal run` / `launch` started (SHOAL_* environment) and connect the engine SHOAL_BACKEND names.
 * Uses `initWorker` from @shoal/wrappers when it is available; otherwise builds the ring engine directly.
 * Returns the engine and a close function that releases it and the job context.
 */
export async function connectEngine(): Promise<{ sync: GradientSync; close: () => Promise<void> }> {
  const init = (wrappers as Record<string, unknown>).initWorker as undefined | (() => Promise<{ sync: GradientSync; close: () => Promise<void> }>);
  if (typeof init === 'function') return init();
  // joinJob (core/src/worker) is not exported by every build yet: look it up.
  const joinJob = (core as Record<string, unknown>).joinJob as undefined | (() => Promise<JobCtx>);
  if (typeof joinJob !== 'function') throw Errors.config('SHOAL_BACKEND', 'this build of @shoal/core has no joinJob; multi-worker runs need it');
  const ctx = await joinJob();
  const o = ctx.options;
  if (o.backend !== 'ring') {
    await ctx.close();
    throw Errors.config('SHOAL_BACKEND', `${o.backend} needs initWorker from @shoal/wrappers, which this build does not have`);
  }
  const sync = await RingSync.connect({ rank: o.rank, size: o.worldSize, store: ctx.store.prefixed('ring'), transport: ctx.transport, listenUrl: ctx.listenUrl, timeoutMs: o.timeoutMs });
  return { sync, close: async () => { await sync.close(); await ctx.close(); } };
}
