/**
 * One rank of the multi-process shared-segment collective tests (shm-collective-process.test.ts):
 *
 *   node shm-collective-worker.js <mode> <rank> <size> <storeUrl> <jobId> <timeoutMs>
 *
 * mode 'exact': int32 sums for lengths 0, 1, 7, 1000, 1 MiB and 64 MiB + 4 bytes, float32 mean/min/max, a
 *   broadcast and a barrier; prints {"ok":true,"digest":...} (digest: a hash of the float results, to compare
 *   ranks bit for bit) or {"error":...}.
 * mode 'mismatch': rank 1 passes one element more; prints {"code":...} of the error, then runs a correct op.
 * mode 'loop': allreduce 4 MiB buffers forever, printing {"iter":k}; on error prints {"error":code,"at":ms}.
 * mode 'absent': rank size-1 never calls (it idles for 3 timeouts, then closes); the others print {"error":code}.
 */
import { createHash } from 'node:crypto';
import { TcpStore } from '@shoal/core';
import { ShmCollective } from '@shoal/backends';
import { rankArgs, runRank, say, sayError } from './helpers/rank-worker.js';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const { mode, rank, size, storeUrl, extra: jobId, timeoutMs } = rankArgs();

async function main(): Promise<void> {
  const store = await TcpStore.connect(storeUrl, { auth, timeoutMs });
  const c = await ShmCollective.connect({ rank, size, store: store.prefixed(`coll-${mode}`), prefix: jobId, timeoutMs });
  try {
    if (mode === 'exact') {
      for (const n of [0, 1, 7, 1000, (1 << 20) / 4, (64 << 20) / 4 + 1]) {
        const a = Int32Array.from({ length: n }, (_, i) => rank * 1_000_003 + i);
        await c.allreduce(a);
        const base = (1_000_003 * size * (size - 1)) / 2;
        for (let i = 0; i < n; i++) if (a[i] !== ((base + size * i) | 0)) throw new Error(`rank ${rank}: n ${n} [${i}] = ${a[i]}`);
      }
      const h = createHash('sha256');
      for (const op of ['sum', 'mean', 'min', 'max'] as const) {
        const f = Float32Array.from({ length: 300_001 }, (_, i) => Math.sin(i * 0.1 + rank) * 100);
        await c.allreduce(f, op);
        h.update(new Uint8Array(f.buffer));
      }
      const b = Float64Array.from({ length: 10_000 }, (_, i) => (rank === size - 1 ? i : -1));
      await c.broadcast(b, size - 1);
      b.forEach((v, i) => {
        if (v !== i) throw new Error(`rank ${rank}: broadcast [${i}] = ${v}`);
      });
      await c.barrier();
      say({ ok: true, rank, digest: h.digest('hex') });
    } else if (mode === 'mismatch') {
      const code = await c.allreduce(new Float32Array(rank === 1 ? 1001 : 1000)).then(
        () => 'ok',
        (e: { code?: string }) => e.code,
      );
      const a = Int32Array.from([rank, 1]);
      await c.allreduce(a);
      say({ code, after: [...a], rank });
    } else if (mode === 'absent') {
      if (rank === size - 1) {
        say({ absent: true, rank });
        await new Promise((r) => setTimeout(r, 3 * timeoutMs));
        return;
      }
      await c.allreduce(new Float32Array(1 << 20)).then(
        () => say({ error: 'none', rank }),
        (e: { code?: string; message?: string }) => say({ error: e.code, message: e.message, rank }),
      );
    } else {
      const a = new Float32Array((4 << 20) / 4).fill(1);
      for (let k = 0; ; k++) {
        await c.allreduce(a, 'mean');
        say({ iter: k, rank });
      }
    }
  } catch (e) {
    sayError(e, rank);
  } finally {
    await c.close();
    await store.close();
  }
}

runRank(main, rank);
