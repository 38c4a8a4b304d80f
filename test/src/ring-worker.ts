/**
 * One rank of the multi-process ring tests (run by ring-multiprocess.test.ts as a compiled child process):
 *
 *   node ring-worker.js <mode> <rank> <size> <storeUrl> <transport net|nng> <timeoutMs>
 *
 * mode 'exact': int32 sums for sizes 0, 1, 7, 1000, 1 MiB and a float64 mean, plus RingSync.allreduceMean and
 *   barrier; prints {"ok":true} or {"error":...}.
 * mode 'loop': allreduce 4 MiB buffers forever, printing {"iter":k} after each; on error prints
 *   {"error":code,"at":Date.now()} and exits 0 (the parent kills one rank and times the others' errors).
 */
import { connectGroup, createNetTransport, createNngTransport, loadKernels, TcpStore, type Transport } from '@shoal/core';
import { RingSync } from '@shoal/backends';
import { allreduceRing, barrierRing } from '@shoal/backends/ring';
import { rankArgs, runRank, say, sayError } from './helpers/rank-worker.js';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const { mode, rank, size, storeUrl, extra: tname, timeoutMs } = rankArgs();

async function main(): Promise<void> {
  const store = await TcpStore.connect(storeUrl, { auth, timeoutMs });
  const transport: Transport = tname === 'nng' ? createNngTransport({ auth }) : createNetTransport({ auth });
  const g = await connectGroup({ rank, size, store: store.prefixed(`ring-${mode}`), transport, listenUrl: 'tcp://127.0.0.1:0', timeoutMs });
  const kernels = loadKernels();
  try {
    if (mode === 'exact') {
      for (const n of [0, 1, 7, 1000, (1 << 20) / 4]) {
        const a = Int32Array.from({ length: n }, (_, i) => rank * n + i);
        await allreduceRing(g, a, { kernels, segmentBytes: 64 << 10 });
        for (let i = 0; i < n; i++) {
          const want = n * ((size * (size - 1)) / 2) + size * i;
          if (a[i] !== want) throw new Error(`rank ${rank}: n ${n} [${i}] = ${a[i]}, want ${want}`);
        }
      }
      const f = Float64Array.from({ length: 5001 }, (_, i) => rank + i / 8);
      await allreduceRing(g, f, { kernels, op: 'mean' });
      f.forEach((v, i) => {
        if (v !== (size - 1) / 2 + i / 8) throw new Error(`rank ${rank}: mean [${i}] = ${v}`);
      });
      const sync = new RingSync(g, { fusionThresholdBytes: 1024 });
      const grads = Array.from({ length: 50 }, (_, t) => ({ name: `g${t}`, shape: [t + 1], data: Float32Array.from({ length: t + 1 }, () => rank * size) }));
      await sync.allreduceMean(grads);
      for (const t of grads) for (const v of t.data) if (v !== ((size - 1) / 2) * size) throw new Error(`rank ${rank}: ${t.name} = ${v}`);
      await barrierRing(g);
      say({ ok: true, rank, stats: g.stats() });
    } else {
      const a = new Float32Array((4 << 20) / 4).fill(1);
      for (let k = 0; ; k++) {
        await allreduceRing(g, a, { kernels, op: 'mean' });
        say({ iter: k, rank });
      }
    }
  } catch (e) {
    sayError(e, rank);
  } finally {
    await g.close();
    await store.close();
    await transport.close?.();
  }
}

runRank(main, rank);
