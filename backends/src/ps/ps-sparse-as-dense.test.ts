import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { MemoryNetwork, MemoryStore } from '@shoal/core';
import { startPsServers } from './launch-servers.js';
import { PsSync, SPARSE_AS_DENSE_BYTES, type PsSyncOptions } from './ps-sync.js';

/**
 * `capabilities.sparseAsDenseBytes`: the ps sends small embedding tables whole only when every worker reaches
 * every server through shared memory, and the ranks agree on it at connect (different answers would make them call
 * different collectives).
 */
async function group(size: number, mode: 'sync' | 'async', opts: (rank: number) => Partial<PsSyncOptions> & { sharedMemory?: boolean; hostId?: string } = () => ({})) {
  const network = new MemoryNetwork();
  const store = new MemoryStore();
  const servers = await startPsServers({ placement: 'local', store, transport: network.transport(), numServers: 2, numWorkers: size, mode, timeoutMs: 10_000 });
  const syncs = await Promise.all(
    Array.from({ length: size }, (_, rank) => PsSync.connect({ rank, numWorkers: size, numServers: 2, store, transport: network.transport(), timeoutMs: 10_000, ...opts(rank) })),
  );
  return {
    syncs,
    async close() {
      await Promise.all(syncs.map((s) => s.close()));
      await Promise.all(servers.map((s) => s.stop()));
    },
  };
}

const bounds = (syncs: PsSync[]) => syncs.map((s) => s.capabilities.sparseAsDenseBytes);

test('every worker on the servers host with the data plane: every rank sends tables up to 4 MiB whole', async () => {
  const g = await group(3, 'sync');
  try {
    assert.equal(bounds(g.syncs), [SPARSE_AS_DENSE_BYTES, SPARSE_AS_DENSE_BYTES, SPARSE_AS_DENSE_BYTES]);
    assert.ok(g.syncs.every((s) => s.kv.sharedPlane));
  } finally {
    await g.close();
  }
});

test('one worker without the data plane: every rank keeps tables row-sparse', async () => {
  const g = await group(3, 'sync', (rank) => (rank === 2 ? { sharedMemory: false } : {}));
  try {
    assert.equal(g.syncs.map((s) => s.kv.sharedPlane), [true, true, false]);
    assert.equal(bounds(g.syncs), [0, 0, 0]);
  } finally {
    await g.close();
  }
});

test('a worker on another host (its id differs from the servers): every rank keeps tables row-sparse', async () => {
  const g = await group(2, 'sync', (rank) => (rank === 1 ? { hostId: 'elsewhere' } : {}));
  try {
    assert.equal(bounds(g.syncs), [0, 0]);
  } finally {
    await g.close();
  }
});

test('an explicit sparseAsDenseBytes is used as given; async servers keep 0', async () => {
  const g = await group(2, 'sync', () => ({ sparseAsDenseBytes: 1024 }));
  try {
    assert.equal(bounds(g.syncs), [1024, 1024]);
  } finally {
    await g.close();
  }
  const a = await group(2, 'async');
  try {
    assert.equal(bounds(a.syncs), [0, 0]);
  } finally {
    await a.close();
  }
});

test('sparseAsDenseBytes that is not an integer >= 0 is ERR_INVALID_ARG naming it', async () => {
  const g = await group(1, 'sync');
  try {
    for (const bad of [-1, 1.5, Number.NaN]) {
      try {
        new PsSync(g.syncs[0]!.kv, { sparseAsDenseBytes: bad });
        assert.unreachable(`accepted ${bad}`);
      } catch (e) {
        assert.is((e as { code?: string }).code, 'ERR_INVALID_ARG');
        assert.match((e as Error).message, /sparseAsDenseBytes/);
      }
    }
  } finally {
    await g.close();
  }
});

test.run();
