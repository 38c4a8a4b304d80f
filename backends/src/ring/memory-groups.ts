import { connectGroup, MemoryNetwork, MemoryStore, type ProcessGroup } from '@shoal/core';
import { settleAll } from '@shoal/core/util';

/**
 * `size` connected process groups in this process over a fresh MemoryNetwork + MemoryStore (gloo's test
 * habit: N ranks as tasks in one process). For tests and benchmarks; the caller closes the groups.
 */
export async function memoryGroups(size: number, opts: { timeoutMs?: number } = {}): Promise<ProcessGroup[]> {
  const net = new MemoryNetwork();
  const store = new MemoryStore().prefixed('ring');
  const transport = net.transport();
  return Promise.all(
    Array.from({ length: size }, (_, rank) =>
      connectGroup({ rank, size, store, transport, listenUrl: 'mem://', timeoutMs: opts.timeoutMs ?? 10_000 }),
    ),
  );
}

/** Run `fn` on every rank concurrently; rethrows the first rank's error (after all have settled). */
export async function onAllRanks<T>(groups: readonly ProcessGroup[], fn: (g: ProcessGroup, rank: number) => Promise<T>): Promise<T[]> {
  return settleAll(groups.map((g, i) => fn(g, i)));
}
