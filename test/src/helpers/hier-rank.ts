/**
 * One rank of a hierarchical-allreduce job, for multi-process tests.
 * argv: <storeUrl> <rank> <size> <hostId> <shmPrefix> <mode> <timeoutMs>
 *   mode 'sum':  allreduce a unique int32 pattern, print `sum ok` if exact, exit 0
 *   mode 'hang': connect, print `ready`, then wait forever (the test SIGKILLs it)
 *   mode 'wait': connect, print `ready`, wait for the store key `go`, then allreduce (its peer is dead by then)
 */
import { createNetTransport, loadKernels, shmTransport, TcpStore } from '@shoal/core';
import { connectHierarchical } from '@shoal/backends';
import { allreduceHierarchical } from '@shoal/backends/ring';
import { testAuth } from './test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const [storeUrl, rankS, sizeS, hostId, prefix, mode, timeoutS] = process.argv.slice(2);
const rank = Number(rankS);
const size = Number(sizeS);
const timeoutMs = Number(timeoutS);

const store = await TcpStore.connect(storeUrl!, { auth, timeoutMs: 20_000 });
const g = await connectHierarchical({
  rank,
  size,
  store: store.prefixed('job'),
  hostId: hostId!,
  local: { transport: shmTransport({ auth, prefix: prefix! }), listenUrl: 'shm://auto' },
  cross: { transport: createNetTransport({ auth }), listenUrl: 'tcp://127.0.0.1:0' },
  timeoutMs,
});
const kernels = loadKernels();
const n = 100_003;
const data = Int32Array.from({ length: n }, (_, i) => (rank + 1) * 1000 + i);
if (mode === 'hang') {
  console.log('ready');
  setInterval(() => {}, 1000);
} else {
  if (mode === 'wait') {
    console.log('ready');
    await store.get('go', 60_000);
  }
  const t0 = Date.now();
  try {
    await allreduceHierarchical(g, data, { kernels, op: 'sum' });
    let ok = true;
    for (let i = 0; i < n; i++) {
      let want = 0;
      for (let q = 0; q < size; q++) want += (q + 1) * 1000 + i;
      if (data[i] !== want) ok = false;
    }
    console.log(ok ? 'sum ok' : 'sum WRONG');
    await g.close();
    await store.close?.();
    process.exit(ok ? 0 : 1);
  } catch (e) {
    const err = e as { code?: string; message?: string };
    console.log(`error ${err.code} after ${Date.now() - t0} ms: ${err.message}`);
    process.exit(3);
  }
}
