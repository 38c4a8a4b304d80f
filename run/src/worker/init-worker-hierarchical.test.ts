import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { RingSync } from '@shoal/backends';
import { JobAuth, TcpStoreServer, type WorkerOptions } from '@shoal/core';

/** This test job's identity (each job below uses it under its own id). */
const auth = JobAuth.generate('test-job');
import { listSegments } from '@shoal/core/transport';
import { settleAll } from '@shoal/core/util';
import { initWorker, type WorkerHandle } from './init-worker.js';

/**
 * initWorker's topology choice over the net transport, all ranks in this process (a real TCP store, real TCP
 * connections, shm inside simulated hosts via the test-only `hostId` option).
 */
async function job(
  jobId: string,
  hostIds: (string | undefined)[],
  topology?: 'flat' | 'hierarchical' | 'auto',
  sameHost?: 'shm-collective' | 'transport',
): Promise<{ ws: WorkerHandle[]; close(): Promise<void> }> {
  const server = await TcpStoreServer.start({ auth: auth.withJobId(jobId) });
  const n = hostIds.length;
  const opts = (rank: number): WorkerOptions => ({
    rank,
    worldSize: n,
    localRank: rank,
    storeUrl: server.url,
    jobId,
    transport: 'net',
    backend: 'ring',
    servers: 0,
    timeoutMs: 10_000,
    host: '127.0.0.1',
    auth: auth.withJobId(jobId),
  });
  let ws: WorkerHandle[];
  try {
    // Every rank's initWorker settles (it is collective); on a failure the ranks that did join are closed.
    ws = await settleAll(
      hostIds.map((hostId, r) => initWorker({ env: {}, options: opts(r), ...(hostId === undefined ? {} : { hostId }), ring: { ...(topology === undefined ? {} : { topology }), ...(sameHost === undefined ? {} : { sameHost }) } })),
      (w) => w.close(),
    );
  } catch (e) {
    await server.close();
    throw e;
  }
  const close = async () => {
    await Promise.all(ws.map((w) => w.close()));
    await server.close();
  };
  return { ws, close };
}

async function checkMean(ws: WorkerHandle[]): Promise<void> {
  const n = ws.length;
  const grads = ws.map((w) => [{ name: 'w', shape: [5000], data: Float32Array.from({ length: 5000 }, (_, i) => n * (w.options.rank * 10_000 + i)) }]);
  await Promise.all(ws.map((w, r) => w.sync.allreduceMean(grads[r]!)));
  for (const g of grads)
    for (let i = 0; i < 5000; i++) {
      let want = 0;
      for (let q = 0; q < n; q++) want += q * 10_000 + i;
      if (g[0]!.data[i] !== want) assert.unreachable(`element ${i}: ${g[0]!.data[i]} != ${want}`);
    }
}

test("net job over hosts [a,a,b,b]: 'auto' routes dense gradients through the hierarchy", async () => {
  const jobId = `iwh${process.pid}a`;
  const j = await job(jobId, ['a', 'a', 'b', 'b']);
  try {
    assert.equal(j.ws.map((w) => (w.sync as RingSync).topology), ['hierarchical', 'hierarchical', 'hierarchical', 'hierarchical']);
    await checkMean(j.ws);
  } finally {
    await j.close();
  }
  assert.equal(listSegments(jobId), [], 'no shared-memory segment left behind');
});

test("one host: the same-host shm collective by default, the transport with sameHost 'transport'; none across hosts", async () => {
  for (const [hosts, sameHost, want] of [
    [[undefined, undefined, undefined], undefined, 'shm-collective'],
    [[undefined, undefined], 'transport', 'transport'],
    [['a', 'a', 'b'], undefined, 'transport'],
  ] as const) {
    const jobId = `iwh${process.pid}c`;
    const j = await job(jobId, [...hosts], undefined, sameHost);
    try {
      assert.equal(j.ws.map((w) => (w.sync as RingSync).sameHost), hosts.map(() => want), `${hosts.join(',')} ${sameHost}`);
      await checkMean(j.ws);
      await Promise.all(j.ws.map((w) => w.sync.barrier()));
    } finally {
      await j.close();
    }
    assert.equal(listSegments(jobId), [], 'no shared-memory segment left behind');
  }
});

test("net job on one host, or one rank per host, or 'flat': the flat ring, no shm", async () => {
  for (const [hosts, topology] of [
    [[undefined, undefined, undefined], undefined],
    [['a', 'b', 'c'], 'auto'],
    [['a', 'a', 'b', 'b'], 'flat'],
  ] as const) {
    const jobId = `iwh${process.pid}b`;
    const j = await job(jobId, [...hosts], topology);
    try {
      assert.equal(j.ws.map((w) => (w.sync as RingSync).topology), hosts.map(() => 'flat'), `${hosts.join(',')} ${topology}`);
      assert.equal(listSegments(jobId), [], 'flat: no shm transport');
      await checkMean(j.ws);
    } finally {
      await j.close();
    }
  }
});

test.run();
