/**
 * Closing a group ends the pairs it is still opening. A survivor of a SIGKILLed peer (`shoal run --elastic`)
 * closes its group while a pair with the dead rank is opening (an accept polling for it, a dial waiting for its
 * address); before the fix that open went on to the group's timeout, and its poll timers kept the process alive
 * that long after training ended (about 1 elastic run in 5 exited `--timeout-ms` late).
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { isShoalError } from '../errors.js';
import { MemoryStore } from '../store/memory.js';
import { MemoryNetwork } from '../transport/memory.js';
import { shmTransport } from '../transport/shm.js';
import type { Transport } from '../transport/transport.js';
import { ProcessGroup } from './process-group.js';

const TIMEOUT_MS = 30_000;

/** How `p` settled, or 'pending' if it did not within `ms`. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<unknown> {
  let t: NodeJS.Timeout | undefined;
  const late = new Promise((r) => (t = setTimeout(() => r('pending'), ms)));
  try {
    return await Promise.race([p.then(() => 'resolved', (e: unknown) => e), late]);
  } finally {
    clearTimeout(t);
  }
}

const transports: Array<[string, () => Transport, string]> = [
  ['memory', () => new MemoryNetwork().transport(), 'mem://'],
  ['shm', () => shmTransport({ prefix: `close-opening-${process.pid}` }), 'shm://auto'],
];

for (const [name, make, listenUrl] of transports) {
  test(`${name}: close() ends a pair still opening with a rank that never comes (accepting and dialing side), with ERR_CLOSED`, async () => {
    // rank 0 of 2 accepts the pair with rank 1 (the lower rank listens); rank 1 of 2 waits for rank 0's address.
    for (const rank of [0, 1]) {
      const store = new MemoryStore();
      const g = new ProcessGroup({ rank, size: 2, store, transport: make(), listenUrl, timeoutMs: TIMEOUT_MS });
      const opening = g.peer(1 - rank);
      await new Promise((r) => setTimeout(r, 50));
      const t0 = Date.now();
      await g.close();
      const got = await settledWithin(opening, 2_000);
      assert.ok(got !== 'pending', `rank ${rank}: the pair was still opening 2 s after close() (timeout ${TIMEOUT_MS} ms)`);
      assert.ok(isShoalError(got, 'ERR_CLOSED'), `rank ${rank}: ${String(got)}`);
      assert.match((got as Error).message, `process group (rank ${rank}) is closed`);
      assert.ok(Date.now() - t0 < 2_000);
      // The dialer's store wait is the store's to end (the job's store closes with the worker): end it here.
      await store.set('pair/0-1', 'gone');
    }
  });
}

test('a process that closed its group while a pair with an absent rank was opening over shm exits at once', () => {
  const group = fileURLToPath(new URL('./process-group.js', import.meta.url));
  const store = fileURLToPath(new URL('../store/memory.js', import.meta.url));
  const shm = fileURLToPath(new URL('../transport/shm.js', import.meta.url));
  const script = `
    const { ProcessGroup } = await import(${JSON.stringify(group)});
    const { MemoryStore } = await import(${JSON.stringify(store)});
    const { shmTransport } = await import(${JSON.stringify(shm)});
    const g = new ProcessGroup({ rank: 0, size: 3, store: new MemoryStore(), transport: shmTransport({ prefix: 'close-exit-' + process.pid }), listenUrl: 'shm://auto', timeoutMs: ${TIMEOUT_MS} });
    g.peer(2).catch(() => {});
    await new Promise((r) => setTimeout(r, 100));
    await g.close();
    globalThis.closedAt = Date.now();
    process.on('exit', () => process.stdout.write(String(Date.now() - globalThis.closedAt)));
  `;
  const t0 = Date.now();
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: TIMEOUT_MS + 10_000 });
  const lingered = Number(out);
  assert.ok(lingered < 2_000, `the process stayed ${lingered} ms after close() (whole run ${Date.now() - t0} ms; timeout ${TIMEOUT_MS} ms)`);
});

test.run();
