/**
 * The Spark job's store entry (run/dist/launcher/spark-store.js), as rank 0's task runs it: prints its address,
 * serves the TCP store, starts the ps server actors when asked, and goes away with its parent's pipe.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { asText, TcpStore } from '@shoal/core';
import { actorEpoch } from '@shoal/core/actor';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const STORE = fileURLToPath(new URL('../../run/dist/launcher/spark-store.js', import.meta.url));

/** Live processes whose environment holds `marker` (e.g. `SHOAL_JOB_ID=<id>`, inherited by the server actors). */
function processesWith(marker: string): number[] {
  const out: number[] = [];
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    try {
      const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ').pop()!.split(' ')[0];
      if (state !== 'Z' && readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0').includes(marker)) out.push(Number(pid));
    } catch {
      // gone meanwhile, or not ours to read
    }
  }
  return out;
}

async function noneLeft(marker: string, ms: number): Promise<number[]> {
  const end = Date.now() + ms;
  for (;;) {
    const left = processesWith(marker);
    if (left.length === 0 || Date.now() > end) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function start(args: string[], env: Record<string, string> = {}): { child: ChildProcessWithoutNullStreams; url: Promise<string>; exited: Promise<number | null>; stderr: () => string } {
  const child = spawn(process.execPath, [STORE, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, SHOAL_JOB_ID: auth.jobId, ...env } });
  let err = '';
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const url = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no SHOAL_STORE line within 20 s; stderr: ${err}`)), 20_000);
    createInterface({ input: child.stdout }).on('line', (line) => {
      if (line.startsWith('SHOAL_STORE ')) {
        clearTimeout(timer);
        resolve(line.slice('SHOAL_STORE '.length).trim());
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`spark-store exited with ${code} before printing its address: ${err}`));
    });
  });
  return { child, url, exited, stderr: () => err };
}

function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([p, new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} not within ${ms} ms`)), ms))]);
}

test('spark-store prints tcp://host:port, serves the store, exits 0 when its stdin closes', async () => {
  const s = start(['--host', '127.0.0.1']);
  const url = await s.url;
  assert.match(url, /^tcp:\/\/127\.0\.0\.1:\d+$/);
  const a = await TcpStore.connect(url, { auth, timeoutMs: 5_000 });
  const b = await TcpStore.connect(url, { auth, timeoutMs: 5_000 });
  await a.set('job/k', 'v1');
  assert.is(asText(await b.get('job/k', 5_000)), 'v1');
  assert.is(await b.add('job/n', 2), 2);
  await a.close();
  await b.close();
  s.child.stdin.end();
  assert.is(await within(s.exited, 10_000, 'exit after stdin EOF'), 0);
  assert.match(s.stderr(), /stdin closed/);
});

test('spark-store with --ps-servers starts the server actors before its address line, and they go with it', async () => {
  const marker = `SHOAL_JOB_ID=spark-store-test-${process.pid}-${Date.now()}`;
  const s = start(['--host', '127.0.0.1', '--ps-servers', '2', '--workers', '2', '--timeout-ms', '20000'], { SHOAL_JOB_ID: marker.split('=')[1]! });
  const url = await s.url;
  const c = await TcpStore.connect(url, { auth: auth.withJobId(marker.split('=')[1]!), timeoutMs: 10_000 });
  // Both shards published their epoch (they are serving) by the time the address was printed.
  assert.ok((await actorEpoch(c, 'ps-server-0', 1_000)) >= 0);
  assert.ok((await actorEpoch(c, 'ps-server-1', 1_000)) >= 0);
  assert.is(processesWith(marker).length, 3, 'the store and its two server actor processes');
  await c.close();
  s.child.stdin.end();
  assert.is(await within(s.exited, 15_000, 'exit after stdin EOF'), 0);
  assert.equal(await noneLeft(marker, 10_000), [], 'no server actor outlives the store');
});

test('spark-store killed hard: its server actors exit on their own (IPC disconnect)', async () => {
  const marker = `SHOAL_JOB_ID=spark-store-kill-${process.pid}-${Date.now()}`;
  const s = start(['--host', '127.0.0.1', '--ps-servers', '1', '--workers', '1'], { SHOAL_JOB_ID: marker.split('=')[1]! });
  await s.url;
  assert.is(processesWith(marker).length, 2);
  s.child.kill('SIGKILL');
  await within(s.exited, 10_000, 'exit after SIGKILL');
  assert.equal(await noneLeft(marker, 10_000), [], 'server actor left after its store was killed');
});

test('spark-store rejects bad options with a clear message', async () => {
  const s = start(['--ps-servers', '2']);
  const code = await within(s.exited, 10_000, 'exit on bad options');
  assert.is(code, 2);
  assert.match(s.stderr(), /--ps-servers needs --workers N/);
  await s.url.catch(() => undefined);
  const t = start(['--port', 'x']);
  assert.is(await within(t.exited, 10_000, 'exit on bad port'), 2);
  assert.match(t.stderr(), /--port must be an integer/);
  await t.url.catch(() => undefined);
});

test.run();
