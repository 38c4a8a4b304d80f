import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { startJsonLinesChild, withTimeout, type JsonLinesChild } from './json-lines-child.js';
import { TcpStoreServer } from '@shoal/core';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const worker = fileURLToPath(new URL('./ring-worker.js', import.meta.url));
const nngBuilt = existsSync(fileURLToPath(new URL('../../core/native/nng/build/Release/shoal_nng.node', import.meta.url)));

type Rank = JsonLinesChild;

const start = (mode: string, rank: number, size: number, store: string, transport: string, timeoutMs: number, onLine?: (o: Record<string, unknown>) => void): Rank =>
  startJsonLinesChild(worker, [mode, String(rank), String(size), store, transport, String(timeoutMs)], onLine);

for (const transport of ['net', 'nng']) {
  test(`ring allreduce exact over ${transport} with 2, 3 and 4 processes`, async () => {
    if (transport === 'nng' && !nngBuilt) {
      console.log('  (nng addon not built: skipped)');
      return;
    }
    for (const size of [2, 3, 4]) {
      const server = await TcpStoreServer.start({ auth });
      const ranks = Array.from({ length: size }, (_, r) => start('exact', r, size, server.url, transport, 20_000));
      try {
        await withTimeout(Promise.all(ranks.map((r) => r.exited)), 45_000, `${size} ranks over ${transport}`);
        ranks.forEach((r, i) => assert.equal(r.lines.at(-1)?.ok, true, `rank ${i}: ${JSON.stringify(r.lines.at(-1))}`));
      } finally {
        ranks.forEach((r) => r.child.kill('SIGKILL'));
        await server.close();
      }
    }
  });
}

test('a peer frozen mid-allreduce (SIGSTOP) makes every survivor raise ERR_TIMEOUT or a peer error within 2x the op timeout (net, 3 processes)', async () => {
  const size = 3;
  const timeoutMs = 2000;
  const server = await TcpStoreServer.start({ auth });
  let stoppedAt = 0;
  const victim = 1;
  const ranks: Rank[] = [];
  const started = new Promise<void>((res) => {
    for (let r = 0; r < size; r++)
      ranks.push(
        start('loop', r, size, server.url, 'net', timeoutMs, (o) => {
          if (o.rank === victim && o.iter === 3) res();
        }),
      );
  });
  try {
    await withTimeout(started, 30_000, 'ranks reaching iteration 3');
    ranks[victim]!.child.kill('SIGSTOP');
    stoppedAt = Date.now();
    const survivors = ranks.filter((_, r) => r !== victim);
    await withTimeout(Promise.all(survivors.map((r) => r.exited)), 4 * timeoutMs, 'survivors exiting');
    survivors.forEach((rk) => {
      const last = rk.lines.at(-1)!;
      assert.ok(typeof last.error === 'string', `last line ${JSON.stringify(last)}`);
      const delay = (last.at as number) - stoppedAt;
      assert.ok(delay < 2 * timeoutMs, `rank ${String(last.rank)} raised ${String(last.error)} after ${delay} ms (limit ${2 * timeoutMs})`);
      console.log(`  rank ${String(last.rank)}: ${String(last.error)} after ${delay} ms`);
    });
  } finally {
    ranks.forEach((r) => r.child.kill('SIGKILL'));
    await server.close();
  }
});

for (const transport of ['net', 'nng'])
test(`a peer killed mid-allreduce makes every survivor raise within 2x the op timeout (${transport}, 4 processes)`, async () => {
  if (transport === 'nng' && !nngBuilt) return;
  const size = 4;
  const timeoutMs = 3000;
  const server = await TcpStoreServer.start({ auth });
  let killedAt = 0;
  const victim = 2;
  const ranks: Rank[] = [];
  const started = new Promise<void>((res) => {
    for (let r = 0; r < size; r++)
      ranks.push(
        start('loop', r, size, server.url, transport, timeoutMs, (o) => {
          if (o.rank === victim && o.iter === 3 && !killedAt) res();
        }),
      );
  });
  try {
    await withTimeout(started, 30_000, 'ranks reaching iteration 3');
    ranks[victim]!.child.kill('SIGKILL');
    killedAt = Date.now();
    await withTimeout(Promise.all(ranks.map((r) => r.exited)), 4 * timeoutMs, 'survivors exiting');
    for (let r = 0; r < size; r++) {
      if (r === victim) continue;
      const last = ranks[r]!.lines.at(-1)!;
      assert.ok(typeof last.error === 'string', `rank ${r} last line ${JSON.stringify(last)}`);
      const delay = (last.at as number) - killedAt;
      assert.ok(delay < 2 * timeoutMs, `rank ${r} raised ${last.error} after ${delay} ms (limit ${2 * timeoutMs})`);
      console.log(`  rank ${r}: ${last.error} after ${delay} ms: ${String(last.message).slice(0, 120)}`);
    }
  } finally {
    ranks.forEach((r) => r.child.kill('SIGKILL'));
    await server.close();
  }
});

test.run();
