import { MemoryNetwork, MemoryStore, type ActorSupervisor } from '@shoal/core';
import { KVWorker } from '../kv-worker.js';
import { startPsServers, type StartPsServersOptions } from '../launch-servers.js';

/**
 * An in-process parameter-server job for fast tests: `numServers` KVServer actors and `numWorkers` KVWorkers
 * over one MemoryNetwork and MemoryStore (nothing shared with other clusters).
 */
export interface MemoryPsCluster {
  network: MemoryNetwork;
  store: MemoryStore;
  servers: ActorSupervisor[];
  workers: KVWorker[];
  close(): Promise<void>;
}

export async function memoryPsCluster(
  o: Omit<StartPsServersOptions, 'placement' | 'store' | 'transport'> & { resendAfterRestart?: boolean; sharedMemory?: boolean; requestBytes?: number; hostId?: (rank: number) => string | undefined },
): Promise<MemoryPsCluster> {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const { resendAfterRestart, sharedMemory, requestBytes, hostId, ...so } = o;
  const servers = await startPsServers({ ...so, placement: 'local', store, transport: network.transport() });
  const workers = await Promise.all(
    Array.from({ length: o.numWorkers }, (_, rank) =>
      KVWorker.connect({ rank, numWorkers: o.numWorkers, numServers: o.numServers, store, transport: network.transport(), timeoutMs: o.timeoutMs, bigKeyBound: o.bigKeyBound, resendAfterRestart, sharedMemory, requestBytes, hostId: hostId?.(rank) }),
    ),
  );
  return {
    network,
    store,
    servers,
    workers,
    async close() {
      await Promise.all(workers.map((w) => w.close()));
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}
