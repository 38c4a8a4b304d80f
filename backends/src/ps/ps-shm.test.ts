import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { JobAuth, MemoryStore, shmTransport, type ActorSupervisor } from '@shoal/core';
import { removeStaleSegments } from '@shoal/core/transport';
import { KVWorker } from './kv-worker.js';
import { startPsServers, type StartPsServersOptions } from './launch-servers.js';
import { allEqual, ones } from './testing/values.js';

// The parameter server over shared memory, in one process, both ways values can travel:
// - 'messages' (`sharedMemory: false`): pushes land in the servers' per-worker receive buffers and pull replies
//   in the workers' own arrays (`recvInto`);
// - 'data plane': gradients and values go through each worker's staging buffers, which the servers map, and only
//   control messages cross the transport.
// These tests pin that those buffers are reused without mixing rounds, workers or outstanding operations.

const prefix = `psshm${process.pid}`;
/** Servers and workers are separate transport objects of one job: they share its identity. */
const auth = JobAuth.generate('ps-shm-test');

type Plane = 'messages' | 'data plane';

async function shmCluster(plane: Plane, o: Omit<StartPsServersOptions, 'placement' | 'store' | 'transport' | 'listenUrl'>) {
  const store = new MemoryStore();
  const transport = shmTransport({ prefix, auth });
  const servers: ActorSupervisor[] = await startPsServers({ ...o, placement: 'local', store, transport, listenUrl: 'shm://auto' });
  const workers = await Promise.all(
    Array.from({ length: o.numWorkers }, (_, rank) =>
      KVWorker.connect({
        rank,
        numWorkers: o.numWorkers,
        numServers: o.numServers,
        store,
        transport: shmTransport({ prefix, auth }),
        timeoutMs: o.timeoutMs,
        bigKeyBound: o.bigKeyBound,
        sharedMemory: plane === 'data plane',
      }),
    ),
  );
  const directPushes = async () => {
    let n = 0;
    for (let s = 0; s < o.numServers; s++) n += (await workers[0]!.server(s).api.stats()).directPushes;
    return n;
  };
  return {
    workers,
    directPushes,
    async close() {
      await Promise.all(workers.map((w) => w.close()));
      await Promise.all(servers.map((s) => s.stop()));
      removeStaleSegments(prefix);
    },
  };
}

for (const plane of ['messages', 'data plane'] as const) {
  test(`shm ps (${plane}): pushPull rounds into the gradient arrays themselves are exact; pushes land in receive buffers`, async () => {
    const n = 2;
    const c = await shmCluster(plane, { numServers: 2, numWorkers: n, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 20_000, bigKeyBound: 50_000 });
    try {
      const size = { big: 120_000, mid: 30_000, small: 7 }; // big: split (60k per server); mid: whole, >= 64 KiB
      const keys = Object.keys(size) as (keyof typeof size)[];
      await Promise.all(c.workers.map((w) => w.init(keys.map((key) => ({ key, size: size[key] })), keys.map((k) => ones(size[k], 0)))));
      const sum = (n * (n + 1)) / 2;
      const before = c.workers[0]!.stats();
      for (let round = 1; round <= 6; round++) {
        const got = await Promise.all(
          c.workers.map(async (w) => {
            const bufs = keys.map((k) => ones(size[k], w.rank + 1));
            const res = await w.pushPull(keys, bufs, bufs);
            res.forEach((r, i) => assert.ok(r === bufs[i], 'values land in the arrays given as outs'));
            return res;
          }),
        );
        got.forEach((vals, r) => vals.forEach((v, i) => allEqual(v, sum * round, `round ${round} rank ${r} ${keys[i]}`)));
      }
      if (plane === 'messages') {
        // big: 2 slices per worker per round, mid: 1 (small is packed into the frame); the first round may miss
        // because receive buffers are made on first use (all later ones land in them)
        assert.ok((await c.directPushes()) >= 5 * n * 3, `pushes received in place: ${await c.directPushes()}`);
      } else {
        // only control messages: far below the 6 rounds x 157k floats each way
        const st = c.workers[0]!.stats();
        const moved = st.bytesSent + st.bytesReceived - before.bytesSent - before.bytesReceived;
        assert.ok(moved < 16 * 1024, `bytes in messages over 6 rounds: ${moved}`);
        assert.is(await c.directPushes(), 0);
      }
    } finally {
      await c.close();
    }
  });

  test(`shm ps (${plane}): two unawaited pushes of the same key per worker, then a pull, sum exactly`, async () => {
    const c = await shmCluster(plane, { numServers: 2, numWorkers: 2, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 20_000, bigKeyBound: 50_000 });
    try {
      await Promise.all(c.workers.map((w) => w.init([{ key: 'w', size: 100_000 }], [ones(100_000, 0)])));
      for (let round = 1; round <= 3; round++) {
        await Promise.all(
          c.workers.map(async (w) => {
            const a = w.push(['w'], [ones(100_000, w.rank + 1)]);
            const b = w.push(['w'], [ones(100_000, 10 * (w.rank + 1))]);
            await Promise.all([a, b]);
          }),
        );
        const [x, y] = await Promise.all(c.workers.map((w) => w.pull(['w'])));
        allEqual(x![0]!, 33 * round, `round ${round} rank 0`);
        allEqual(y![0]!, 33 * round, `round ${round} rank 1`);
      }
    } finally {
      await c.close();
    }
  });

  test(`shm ps (${plane}): async mode with 8 outstanding pushes per worker sums exactly`, async () => {
    const c = await shmCluster(plane, { numServers: 2, numWorkers: 2, mode: 'async', updater: { type: 'add', lr: 1 }, timeoutMs: 20_000, bigKeyBound: 50_000 });
    try {
      await Promise.all(c.workers.map((w) => w.init([{ key: 'x', size: 100_000 }], [ones(100_000, 0)])));
      await Promise.all(
        c.workers.map(async (w) => {
          const inflight = new Set<Promise<void>>();
          for (let i = 0; i < 40; i++) {
            while (inflight.size >= 8) await Promise.race(inflight);
            const p: Promise<void> = w.push(['x'], [ones(100_000, i + 1)]).then(() => void inflight.delete(p));
            inflight.add(p);
          }
          await Promise.all(inflight);
        }),
      );
      const [x] = await c.workers[0]!.pull(['x']);
      allEqual(x!, 2 * ((40 * 41) / 2), 'x');
    } finally {
      await c.close();
    }
  });

  test(`shm ps (${plane}): a push issued before the previous pull of its key settled waits for it; every pull sees whole rounds`, async () => {
    // Sync mode replies from the live weights without a copy: if a worker's next push reached the server before
    // its pull reply had left, the round it completes could change the weights under the reply. The worker
    // orders a push after the pulls of its keys, so every pull below reads one consistent round.
    const n = 2;
    const size = 600_000; // > 1 MiB per server slice: copied into the ring by the writer thread
    const c = await shmCluster(plane, { numServers: 2, numWorkers: n, mode: 'sync', updater: { type: 'add', lr: 1 }, timeoutMs: 20_000, bigKeyBound: 100_000 });
    try {
      await Promise.all(c.workers.map((w) => w.init([{ key: 'w', size }], [ones(size, 0)])));
      const sum = (n * (n + 1)) / 2;
      const rounds = 8;
      await Promise.all(
        c.workers.map(async (w) => {
          const grad = ones(size, w.rank + 1);
          await w.push(['w'], [grad]);
          for (let round = 1; round <= rounds; round++) {
            const pulled = w.pull(['w']); // not awaited before the next push
            const pushed = w.push(['w'], [grad]);
            const [v] = await pulled;
            allEqual(v!, sum * round, `rank ${w.rank} pull after round ${round}`);
            await pushed;
          }
          const [last] = await w.pull(['w']);
          allEqual(last!, sum * (rounds + 1), `rank ${w.rank} final pull`);
        }),
      );
    } finally {
      await c.close();
    }
  });
}

test.run();
