import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fileURLToPath } from 'node:url';
import { startJsonLinesChild, withTimeout, type JsonLinesChild } from './json-lines-child.js';
import { TcpStoreServer } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

/** The same-host shared-segment collective (ShmCollective) with ranks as real processes. */
const worker = fileURLToPath(new URL('./shm-collective-worker.js', import.meta.url));

type Rank = JsonLinesChild;

const start = (mode: string, rank: number, size: number, store: string, jobId: string, timeoutMs: number, onLine?: (o: Record<string, unknown>) => void): Rank =>
  startJsonLinesChild(worker, [mode, String(rank), String(size), store, jobId, String(timeoutMs)], onLine);

async function run(mode: string, size: number, jobId: string, timeoutMs: number): Promise<Rank[]> {
  const server = await TcpStoreServer.start({ auth });
  const ranks = Array.from({ length: size }, (_, r) => start(mode, r, size, server.url, jobId, timeoutMs));
  try {
    await withTimeout(Promise.all(ranks.map((r) => r.exited)), 90_000, `${size} ranks, ${mode}`);
    return ranks;
  } finally {
    ranks.forEach((r) => r.child.kill('SIGKILL'));
    await server.close();
  }
}

test('exact int32 sums (0 .. 64 MiB + 4 B), float ops bitwise identical on every rank, broadcast, barrier: 2 and 3 processes', async () => {
  for (const size of [2, 3]) {
    const jobId = `scp${process.pid}e${size}`;
    const ranks = await run('exact', size, jobId, 30_000);
    const last = ranks.map((r) => r.lines.at(-1) ?? {});
    last.forEach((l, i) => assert.equal(l.ok, true, `rank ${i}: ${JSON.stringify(l)}`));
    for (const l of last) assert.is(l.digest, last[0]!.digest, 'float results differ across ranks');
    assert.equal(listSegments(jobId), []);
  }
});

test('mismatched lengths: ERR_MISMATCH on every process, and the next op works', async () => {
  const ranks = await run('mismatch', 3, `scp${process.pid}m`, 10_000);
  for (const r of ranks) {
    const l = r.lines.at(-1)!;
    assert.is(l.code, 'ERR_MISMATCH', JSON.stringify(l));
    assert.equal(l.after, [3, 3]);
  }
});

test('a rank that never arrives: the others raise ERR_TIMEOUT (or the abort of the first to time out)', async () => {
  const t0 = Date.now();
  const ranks = await run('absent', 3, `scp${process.pid}a`, 1500);
  const errs = ranks.slice(0, 2).map((r) => r.lines.at(-1)!);
  for (const e of errs) assert.ok(e.error === 'ERR_TIMEOUT' || e.error === 'ERR_PEER_CLOSED', JSON.stringify(e));
  assert.ok(errs.some((e) => e.error === 'ERR_TIMEOUT' && /rank\(s\) 2\b/.test(String(e.message))), JSON.stringify(errs));
  assert.ok(Date.now() - t0 < 60_000);
});

test('a SIGKILLed rank while the others wait: every survivor raises within the timeout; nothing left in /dev/shm', async () => {
  const size = 3;
  const timeoutMs = 5000;
  const jobId = `scp${process.pid}k`;
  const server = await TcpStoreServer.start({ auth });
  const victim = 1;
  const ranks: Rank[] = [];
  const started = new Promise<void>((res) => {
    for (let r = 0; r < size; r++)
      ranks.push(
        start('loop', r, size, server.url, jobId, timeoutMs, (o) => {
          if (o.rank === victim && o.iter === 3) res();
        }),
      );
  });
  try {
    await withTimeout(started, 30_000, 'ranks reaching iteration 3');
    ranks[victim]!.child.kill('SIGKILL');
    const killedAt = Date.now();
    const survivors = ranks.filter((_, r) => r !== victim);
    await withTimeout(Promise.all(survivors.map((r) => r.exited)), 3 * timeoutMs, 'survivors exiting');
    for (const r of survivors) {
      const l = r.lines.at(-1)!;
      assert.is(l.error, 'ERR_PEER_CLOSED', JSON.stringify(l));
      assert.ok(Number(l.at) - killedAt < timeoutMs, `raised ${Number(l.at) - killedAt} ms after the kill`);
    }
    assert.equal(listSegments(jobId), []);
  } finally {
    ranks.forEach((r) => r.child.kill('SIGKILL'));
    await server.close();
  }
});

test.run();
