import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError, TcpStoreServer } from '@shoal/core';
import { joinJob, watchParent } from './join-job.js';
import { JobAuth } from '@shoal/core';

/** This test job's identity: every store and transport connection authenticates with it. */
const auth = JobAuth.generate('test-job');


test('a one-worker job without a launcher gets a private store and a net transport', async () => {
  const job = await joinJob({ env: { SHOAL_WORLD_SIZE: '1', SHOAL_RANK: '0' } });
  assert.is(job.options.worldSize, 1);
  assert.is(job.transport.name, 'net');
  assert.is(job.listenUrl, 'tcp://127.0.0.1:0');
  await job.store.set('k', 'v');
  assert.is(new TextDecoder().decode(await job.store.get('k', 100)), 'v');
  await job.close();
  await job.close();
});

test('two workers join through the TCP store under their job id', async () => {
  const server = await TcpStoreServer.start({ auth: auth.withJobId('j1') });
  try {
    const env = (rank: number) => ({ SHOAL_WORLD_SIZE: '2', SHOAL_RANK: String(rank), SHOAL_STORE: server.url, SHOAL_JOB_ID: 'j1', SHOAL_TIMEOUT_MS: '5000', ...auth.childEnv() });
    const [a, b] = await Promise.all([joinJob({ env: env(0) }), joinJob({ env: env(1) })]);
    await a!.store.set('hello', 'from 0');
    assert.is(new TextDecoder().decode(await b!.store.get('hello', 2000)), 'from 0');
    assert.is(new TextDecoder().decode(await b!.rawStore.get('j1/hello', 2000)), 'from 0', 'the job store is the raw store prefixed by the job id');
    await Promise.all([a!.close(), b!.close()]);
  } finally {
    await server.close();
  }
});

test('bad environments are named', async () => {
  for (const [env, re] of [
    [{ SHOAL_WORLD_SIZE: '2', SHOAL_RANK: '0' }, /SHOAL_STORE/],
    [{ SHOAL_WORLD_SIZE: '2', SHOAL_RANK: '0', SHOAL_STORE: 'tcp://127.0.0.1:1' }, /SHOAL_JOB_SECRET: is not set/],
    [{ SHOAL_WORLD_SIZE: '2', SHOAL_RANK: '0', SHOAL_STORE: 'tcp://127.0.0.1:1', SHOAL_JOB_SECRET: 'abc' }, /SHOAL_JOB_SECRET: must be 64 hex digits/],
    [{ SHOAL_WORLD_SIZE: '1', SHOAL_RANK: '0', SHOAL_TRANSPORT: 'memory' }, /SHOAL_TRANSPORT: memory is for in-process tests/],
    [{ SHOAL_WORLD_SIZE: '1', SHOAL_RANK: '0', SHOAL_TRANSPORT: 'carrier-pigeon' }, /SHOAL_TRANSPORT/],
  ] as const) {
    try {
      await joinJob({ env: env as Record<string, string> });
      assert.unreachable(JSON.stringify(env));
    } catch (e) {
      assert.ok(isShoalError(e, 'ERR_CONFIG'), String(e));
      assert.match((e as Error).message, re);
    }
  }
});

test('watchParent fires when the parent pid is not ours any more', async () => {
  let lost = 0;
  const stop = watchParent(process.ppid + 100_000, () => void lost++, 20);
  await new Promise((r) => setTimeout(r, 80));
  stop();
  assert.ok(lost >= 1);
  let kept = 0;
  const stop2 = watchParent(process.ppid, () => void kept++, 20);
  await new Promise((r) => setTimeout(r, 80));
  stop2();
  assert.is(kept, 0);
});

test.run();
