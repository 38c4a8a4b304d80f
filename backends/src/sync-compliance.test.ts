import { PsSync, RingSync, startPsServers, type GradientSync } from '@shoal/backends';
import { gradientSyncCompliance, memoryGroups } from '@shoal/backends/testing';
import { MemoryNetwork, MemoryStore } from '@shoal/core';
import { HybridSync } from './hybrid/hybrid-sync.js';
import { LocalSync } from './local/local-sync.js';

// The GradientSync compliance suite of @shoal/backends against the engines this package adds.
gradientSyncCompliance('LocalSync', async () => [new LocalSync()], { sizes: [1] }).run();

gradientSyncCompliance('HybridSync (memory ring + local ps)', async (n): Promise<GradientSync[]> => {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const servers = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: 1, numWorkers: n, mode: 'sync', timeoutMs: 10_000 });
  const groups = await memoryGroups(n, { timeoutMs: 10_000 });
  const ps = await Promise.all(Array.from({ length: n }, (_, rank) => PsSync.connect({ rank, numWorkers: n, numServers: 1, store, transport: network.transport(), timeoutMs: 10_000 })));
  return groups.map((g, r) => {
    const h = new HybridSync(new RingSync(g), ps[r]!);
    const close = h.close.bind(h);
    // The last rank to close stops the server actor.
    h.close = async () => {
      await close();
      if (r === n - 1) await Promise.all(servers.map((s) => s.stop()));
    };
    return h;
  });
}, { collectiveOrder: true }).run();
