import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { fork, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { netRemote, NetTransport, TcpStore, TcpStoreServer, type ActorSupervisor } from '@shoal/core';
import { PsSync, startPsServers, type StartPsServersOptions } from '@shoal/backends';
import { gradientSyncCompliance } from '@shoal/backends/testing';
import { testAuth } from './helpers/test-auth.js';

/** This job's identity (the secret is inherited by the processes it starts). */
const auth = testAuth();

const workerScript = fileURLToPath(new URL('./ps-fixture-worker.js', import.meta.url));
type Result = { ok: boolean; rounds?: number; code?: string; message?: string; round?: number; msSinceKill?: number; sharedCalls?: number };

function runWorker(job: object): Promise<Result> {
  return startWorker(job).result;
}

function startWorker(job: object): { child: ChildProcess; result: Promise<Result> } {
  const c = fork(workerScript, [], { env: { ...process.env, SHOAL_PS_TEST: JSON.stringify(job) }, stdio: ['ignore', 'pipe', 'inherit', 'ipc'] });
  const result = new Promise<Result>((resolve, reject) => {
    let text = '';
    c.stdout!.on('data', (d) => (text += d));
    const timer = setTimeout(() => c.kill('SIGKILL'), 45_000);
    c.on('exit', (code) => {
      clearTimeout(timer);
      const line = text.trim().split('\n').pop() ?? '';
      try {
        resolve(JSON.parse(line) as Result);
      } catch {
        reject(new Error(`worker exited ${code} without a result: ${text}`));
      }
    });
  });
  return { child: c, result };
}

async function psJob(numWorkers: number, extra: Partial<StartPsServersOptions> = {}) {
  const storeServer = await TcpStoreServer.start({ auth });
  const store = await TcpStore.connect(storeServer.url, { auth });
  const servers: ActorSupervisor[] = await startPsServers({
    auth,
    placement: 'process',
    store,
    remote: netRemote(storeServer.url),
    numServers: 2,
    numWorkers,
    mode: 'sync',
    updater: { type: 'add', lr: 2 },
    timeoutMs: 8000,
    ...extra,
  });
  return {
    storeServer,
    store,
    servers,
    job: (rank: number, rounds: number, more: object = {}) => ({
      storeUrl: storeServer.url,
      rank,
      numWorkers,
      numServers: 2,
      rounds,
      rate: 2,
      sizes: { small: 12, big: 1200 * 1200 },
      resend: false,
      timeoutMs: 8000,
      signalRound: 3,
      ...more,
    }),
    async close() {
      await Promise.all(servers.map((s) => s.stop()));
      await store.close();
      await storeServer.close();
    },
  };
}

test('dist_sync across processes: 3 workers x 2 servers, small key and a split 1200x1200 key, exact', async () => {
  const j = await psJob(3);
  const res = await Promise.all([0, 1, 2].map((r) => runWorker(j.job(r, 4))));
  for (const r of res) assert.equal(r, { ...r, ok: true, rounds: 4 }, JSON.stringify(r));
  for (const r of res) assert.ok(r.sharedCalls! >= 4, `servers on this host: values through the data plane (${r.sharedCalls} requests)`);
  await j.close();
});

test('a server killed mid-run is reported on every worker (naming it) within the timeout', async () => {
  const j = await psJob(2);
  const running = [0, 1].map((r) => runWorker(j.job(r, 10_000)));
  await j.store.get('reached/3', 20_000);
  await j.store.set('killedAt', String(Date.now()));
  await j.servers[1]!.kill('SIGKILL');
  const res = await Promise.all(running);
  for (const r of res) {
    assert.is(r.ok, false, JSON.stringify(r));
    assert.is(r.code, 'ERR_PEER_CLOSED', JSON.stringify(r));
    assert.match(r.message ?? '', /ps-server-1/);
    assert.ok(r.msSinceKill! >= 0 && r.msSinceKill! < 8000, `reported ${r.msSinceKill} ms after the kill`);
  }
  await j.close();
});

test('a worker SIGKILLed mid-run (values on the same-host data plane) fails the other worker at once, naming it; nothing left in /dev/shm', async () => {
  const j = await psJob(2);
  const w0 = startWorker(j.job(0, 10_000));
  const w1 = startWorker(j.job(1, 10_000));
  w1.result.catch(() => {}); // it dies without a result
  await j.store.get('reached/3', 20_000);
  const killedAt = Date.now();
  await j.store.set('killedAt', String(killedAt));
  w1.child.kill('SIGKILL');
  const r = await w0.result;
  assert.is(r.ok, false, JSON.stringify(r));
  assert.is(r.code, 'ERR_PEER_CLOSED', JSON.stringify(r));
  assert.match(r.message ?? '', /worker 1 disconnected/);
  assert.ok(r.msSinceKill! >= 0 && r.msSinceKill! < 4000, `reported ${r.msSinceKill} ms after the kill`);
  const left = readdirSync('/dev/shm').filter((f) => f.startsWith('shoal-ps-w') && (f.includes(`-${w0.child.pid}-`) || f.includes(`-${w1.child.pid}-`)));
  assert.equal(left, [], 'staging regions are unlinked once mapped');
  await j.close();
});

test('with durable checkpoints a restarted server continues and no acknowledged update is lost', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ps-proc-'));
  const j = await psJob(2, { checkpointDir: dir, durable: true, restart: { maxRestarts: 1, backoffMs: 50 } });
  const rounds = 14;
  const running = [0, 1].map((r) => runWorker(j.job(r, rounds, { resend: true, sizes: { small: 12, big: 1_100_000 } })));
  await j.store.get('reached/3', 20_000);
  await j.servers[1]!.kill('SIGKILL');
  const res = await Promise.all(running);
  for (const r of res) assert.equal(r, { ...r, ok: true, rounds }, JSON.stringify(r));
  await j.servers[1]!.settled();
  assert.is(j.servers[1]!.restarts, 1);
  await j.close();
  rmSync(dir, { recursive: true, force: true });
});

// The GradientSync compliance suite over real sockets: servers in worker threads (net transport, TcpStore),
// the ranks' PsSync engines in this process, each with its own net transport.
gradientSyncCompliance('ps over net (servers in threads)', async (size) => {
  const storeServer = await TcpStoreServer.start({ auth });
  const store = await TcpStore.connect(storeServer.url, { auth });
  const servers = await startPsServers({ auth, placement: 'thread', store, remote: netRemote(storeServer.url), numServers: 2, numWorkers: size, mode: 'sync', timeoutMs: 10_000 });
  let open = size;
  return Promise.all(
    Array.from({ length: size }, (_, rank) =>
      PsSync.connect({
        rank,
        numWorkers: size,
        numServers: 2,
        store,
        transport: new NetTransport({ auth }),
        timeoutMs: 10_000,
        onClose: async () => {
          if (--open > 0) return;
          await Promise.all(servers.map((s) => s.stop()));
          await store.close();
          await storeServer.close();
        },
      }),
    ),
  );
}, { sizes: [1, 3], collectiveOrder: true }).run();

test.run();
