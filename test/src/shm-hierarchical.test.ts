/**
 * Multi-process checks of the same-host fast path (issue 9): real processes, shared memory inside a host,
 * TCP between host leaders, the launcher's TCP rendezvous store.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { TcpStoreServer } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const script = new URL('./helpers/hier-rank.js', import.meta.url).pathname;

interface Rank {
  child: ChildProcess;
  out: string;
  exited: Promise<{ code: number | null; ms: number }>;
}

function startRank(args: string[]): Rank {
  const t0 = Date.now();
  const child = spawn(process.execPath, [script, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const r: Rank = { child, out: '', exited: undefined as never };
  child.stdout!.on('data', (d) => (r.out += d));
  child.stderr!.on('data', (d) => (r.out += d));
  r.exited = new Promise((res) => child.on('exit', (code) => res({ code, ms: Date.now() - t0 })));
  return r;
}

async function waitFor(r: Rank, text: string, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!r.out.includes(text)) {
    if (Date.now() > end) throw new Error(`timed out waiting for '${text}'; output: ${r.out}`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

test('2 simulated hosts x 2 processes: exact sums through shm + tcp', async () => {
  const server = await TcpStoreServer.start({ auth });
  const prefix = `hp${process.pid}a`;
  try {
    const hosts = ['h0', 'h1', 'h0', 'h1'];
    const ranks = hosts.map((h, r) => startRank([server.url, String(r), '4', h, prefix, 'sum', '20000']));
    const results = await Promise.all(ranks.map((r) => r.exited));
    ranks.forEach((r, i) => assert.is(results[i]!.code, 0, `rank ${i}: ${r.out}`));
    for (const r of ranks) assert.match(r.out, /sum ok/);
    assert.equal(listSegments(prefix), []);
  } finally {
    await server.close();
  }
});

test('a SIGKILLed rank makes the others raise within the timeout and leaves no segment in /dev/shm', async () => {
  const server = await TcpStoreServer.start({ auth });
  const prefix = `hp${process.pid}b`;
  const timeoutMs = 3000;
  try {
    const victim = startRank([server.url, '2', '3', 'h', prefix, 'hang', String(timeoutMs)]);
    const others = [0, 1].map((r) => startRank([server.url, String(r), '3', 'h', prefix, 'wait', String(timeoutMs)]));
    await Promise.all([victim, ...others].map((r) => waitFor(r, 'ready', 20_000)));
    victim.child.kill('SIGKILL');
    await victim.exited;
    const t0 = Date.now();
    const { TcpStore } = await import('@shoal/core');
    const s = await TcpStore.connect(server.url, { auth });
    await s.set('go', '1');
    const res = await Promise.all(others.map((r) => r.exited));
    const waited = Date.now() - t0;
    others.forEach((r, i) => {
      assert.is(res[i]!.code, 3, `rank ${i} should fail: ${r.out}`);
      assert.match(r.out, /error ERR_(PEER_CLOSED|TIMEOUT|CLOSED)/);
    });
    assert.ok(waited < 2 * timeoutMs + 1000, `survivors took ${waited} ms (op timeout ${timeoutMs} ms)`);
    await s.close();
    assert.equal(listSegments(prefix), [], 'no segment left in /dev/shm');
  } finally {
    await server.close();
  }
});

test.run();
