import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError, JobAuth, TcpStoreServer, type WorkerOptions } from '@shoal/core';
import { connectEngine } from './engine-factory.js';
import { joinJob } from './join-job.js';

/**
 * Issue #16: an elastic worker abandoning an older generation's connect gives it up through `connectEngine`'s
 * signal. Rank 0 of a 3-rank ring whose peers never come: the abort rejects at once (not at the 20 s timeout) and
 * the listener the group opened for its pairs is closed with it.
 */
const auth = JobAuth.generate('engine-abort');

function listeners(): number {
  return process.getActiveResourcesInfo().filter((r) => r === 'TCPServerWrap').length;
}

async function lonelyRank0(jobId: string): Promise<{ options: WorkerOptions; close(): Promise<void>; job: Awaited<ReturnType<typeof joinJob>> }> {
  const a = auth.withJobId(jobId);
  const server = await TcpStoreServer.start({ auth: a });
  const options: WorkerOptions = { rank: 0, worldSize: 3, localRank: 0, storeUrl: server.url, jobId, transport: 'net', backend: 'ring', servers: 0, timeoutMs: 20_000, host: '127.0.0.1', auth: a };
  const job = await joinJob({ options, watchParent: false });
  return { options, job, close: async () => (await job.close(), await server.close()) };
}

test('an abort mid-connect rejects at once with ERR_ABORTED and closes the group it opened', async () => {
  const before = listeners();
  const { options, job, close } = await lonelyRank0('engine-abort-1');
  try {
    const ac = new AbortController();
    const t0 = performance.now();
    const p = connectEngine(options, job, { ring: { sameHost: 'transport', topology: 'flat' } }, undefined, { signal: ac.signal });
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(listeners() > before + 1, 'the group should be listening for its pairs while it connects');
    ac.abort(new Error('a newer generation'));
    const err = await p.then(() => undefined, (e: unknown) => e);
    const ms = performance.now() - t0;
    assert.ok(isShoalError(err, 'ERR_ABORTED'), `expected ERR_ABORTED, got ${String(err)}`);
    assert.ok(ms < 3000, `the abort took ${ms.toFixed(0)} ms (the timeout is 20 s)`);
    // the group's listener is gone (only the store's and nothing else of the connect remains)
    await new Promise((r) => setTimeout(r, 100));
    assert.is(listeners(), before + 1, 'the aborted group left a listener open');
  } finally {
    await close();
  }
});

test('a signal aborted before the call rejects without connecting anything', async () => {
  const { options, job, close } = await lonelyRank0('engine-abort-2');
  try {
    const ac = new AbortController();
    ac.abort();
    const err = await connectEngine(options, job, { ring: { topology: 'flat' } }, undefined, { signal: ac.signal }).then(() => undefined, (e: unknown) => e);
    assert.ok(isShoalError(err, 'ERR_ABORTED'), `expected ERR_ABORTED, got ${String(err)}`);
  } finally {
    await close();
  }
});

test.run();
