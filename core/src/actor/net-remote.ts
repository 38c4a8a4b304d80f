import type { ModuleRef } from './module-ref.js';

/**
 * The usual way for an actor in another process or thread to reach the job: the `net` transport and a
 * `TcpStore` client of the launcher's store at `storeUrl`. Pass as `remote` to `ActorSupervisor.spawn`.
 */
export function netRemote(storeUrl: string, opts: { maxMessageBytes?: number; storeTimeoutMs?: number } = {}): { transport: ModuleRef; store: ModuleRef } {
  return {
    transport: { module: '@shoal/core', export: 'NetTransport', args: [opts.maxMessageBytes ? { maxMessageBytes: opts.maxMessageBytes } : {}] },
    store: { module: '@shoal/core', export: 'TcpStore', method: 'connect', args: [storeUrl, opts.storeTimeoutMs ? { timeoutMs: opts.storeTimeoutMs } : {}] },
  };
}

/** Same-host actors over shared memory (the `shm` transport; listen on `shm://auto`) with a TcpStore. */
export function shmRemote(storeUrl: string, opts: { prefix?: string; storeTimeoutMs?: number; ringBytes?: number } = {}): { transport: ModuleRef; store: ModuleRef } {
  const t: { prefix?: string; ringBytes?: number } = {};
  if (opts.prefix) t.prefix = opts.prefix;
  if (opts.ringBytes) t.ringBytes = opts.ringBytes;
  return {
    transport: { module: '@shoal/core', export: 'shmTransport', call: true, args: [t] },
    store: { module: '@shoal/core', export: 'TcpStore', method: 'connect', args: [storeUrl, opts.storeTimeoutMs ? { timeoutMs: opts.storeTimeoutMs } : {}] },
  };
}
