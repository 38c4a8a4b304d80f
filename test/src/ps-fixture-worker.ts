/**
 * A parameter-server worker process for test/src/ps-process.test.ts. Reads its job from SHOAL_PS_TEST (JSON),
 * runs MXNet's dist_sync loop (push ones*(rank+1) into `w += lr*g`, pull, check the closed form) and prints one
 * JSON line: `{ ok: true, rounds, ms, sharedCalls }` or `{ ok: false, code, message, round, msSinceKill }`.
 */
import { isShoalError, NetTransport, TcpStore } from '@shoal/core';
import { KVWorker } from '@shoal/backends';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

interface Job {
  storeUrl: string;
  rank: number;
  numWorkers: number;
  numServers: number;
  rounds: number;
  rate: number;
  sizes: { small: number; big: number };
  resend: boolean;
  timeoutMs: number;
  /** Rank 0 sets store key `reached/<n>` when it finishes round n. */
  signalRound: number;
}

const job = JSON.parse(process.env.SHOAL_PS_TEST ?? '{}') as Job;
const out = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);

async function main() {
  const store = await TcpStore.connect(job.storeUrl, { auth, timeoutMs: job.timeoutMs });
  const transport = new NetTransport({ auth });
  const kv = await KVWorker.connect({ rank: job.rank, numWorkers: job.numWorkers, numServers: job.numServers, store, transport, timeoutMs: job.timeoutMs, resendAfterRestart: job.resend });
  const { small, big } = job.sizes;
  await kv.init(
    [{ key: 'small', size: small }, { key: 'big', size: big }],
    job.rank === 0 ? [new Float32Array(small).fill(1), new Float32Array(big).fill(1)] : undefined,
  );
  const t0 = Date.now();
  let round = 0;
  try {
    const g = [new Float32Array(small).fill(job.rank + 1), new Float32Array(big).fill(job.rank + 1)];
    for (round = 1; round <= job.rounds; round++) {
      const [s, b] = await kv.pushPull(['small', 'big'], g, [new Float32Array(small), new Float32Array(big)]);
      const want = 1 + ((job.rate * job.numWorkers * (job.numWorkers + 1)) / 2) * round;
      for (const [name, a] of [['small', s!], ['big', b!]] as const) {
        for (let i = 0; i < a.length; i++) if (a[i] !== want) throw new Error(`round ${round} ${name}[${i}] = ${a[i]}, want ${want}`);
      }
      if (job.rank === 0 && round === job.signalRound) await store.set(`reached/${round}`, String(Date.now()));
    }
    out({ ok: true, rounds: job.rounds, ms: Date.now() - t0, sharedCalls: kv.stats().sharedCalls });
  } catch (e) {
    const killedAt = await store.get('killedAt', 1000).then((v) => Number(new TextDecoder().decode(v))).catch(() => 0);
    out({ ok: false, code: isShoalError(e) ? e.code : 'ERR_OTHER', message: (e as Error).message, round, msSinceKill: killedAt ? Date.now() - killedAt : -1 });
  }
  await kv.close().catch(() => {});
  await store.close();
  process.exit(0);
}
void main();
