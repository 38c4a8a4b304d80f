import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { isShoalError, JobAuth, JobTls, MemoryStore, TcpStore, TcpStoreServer } from '@shoal/core';
import { DirCommits, StoreCommits } from './commit-store.js';

/**
 * The commit stores of elastic Spark jobs (issue #16): what rank 0 saves is what the next stage loads, a commit
 * cut short leaves the previous one, and a commit another job (another secret) or damage produced is refused.
 */
const bytes = (n: number, seed: number) => Uint8Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff);

test('folder: a saved commit loads back; none yet is undefined', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-commits-'));
  try {
    const c = new DirCommits(dir, JobAuth.generate('job-a'));
    assert.is(await c.load(), undefined);
    await c.save(bytes(1000, 1));
    await c.save(bytes(5000, 2));
    assert.equal(await c.load(), bytes(5000, 2));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('folder: a flipped byte, or a file sealed under another secret, fails with ERR_DATA', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-commits-'));
  try {
    const auth = JobAuth.generate('job-a');
    await new DirCommits(dir, auth).save(bytes(4096, 3));
    const file = join(dir, 'commit.bin');
    const good = readFileSync(file);
    const bad = Buffer.from(good);
    bad[good.length - 7]! ^= 0x10;
    writeFileSync(file, bad);
    const e1 = await new DirCommits(dir, auth).load().then(() => undefined, (e: unknown) => e);
    assert.ok(isShoalError(e1, 'ERR_DATA') && /MAC/.test(e1.message), String(e1));
    // the same job id under another secret (another run's file left in the folder)
    await new DirCommits(dir, JobAuth.generate('job-a')).save(bytes(4096, 3));
    const e2 = await new DirCommits(dir, auth).load().then(() => undefined, (e: unknown) => e);
    assert.ok(isShoalError(e2, 'ERR_DATA') && /not written by this job/.test(e2.message), String(e2));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("the driver's store: a commit bigger than one message round-trips through an authenticated TCP store", async () => {
  const auth = JobAuth.generate('job-s');
  const server = await TcpStoreServer.start({ auth, maxBytes: 64 * 1024 * 1024 });
  const client = await TcpStore.connect(server.url, { auth });
  try {
    const c = new StoreCommits(client.prefixed('job-s'), 'test store', 5000);
    assert.is(await c.load(), undefined);
    await c.save(bytes(7 * 1024 * 1024 + 5, 4)); // 3 parts
    await c.save(bytes(100, 5)); // the other slot
    // a new reader (the next stage's rank 0) sees the last one
    const again = new StoreCommits(client.prefixed('job-s'), 'test store', 5000);
    assert.equal(await again.load(), bytes(100, 5));
    await again.save(bytes(2 * 1024 * 1024, 6)); // back to the first slot, fewer parts than it held
    assert.equal(await new StoreCommits(client.prefixed('job-s'), 'test store', 5000).load(), bytes(2 * 1024 * 1024, 6));
  } finally {
    await client.close();
    await server.close();
  }
});

test("the driver's store under tls=True: commits round-trip over TLS; a client without the job secret gets nothing", async () => {
  const auth = JobAuth.generate('job-t').withTls(await JobTls.generate('job-t'));
  const server = await TcpStoreServer.start({ auth });
  const client = await TcpStore.connect(server.url, { auth });
  try {
    await new StoreCommits(client.prefixed('job-t'), 'tls store', 5000).save(bytes(10_000, 9));
    assert.equal(await new StoreCommits(client.prefixed('job-t'), 'tls store', 5000).load(), bytes(10_000, 9));
    // another job's secret (same certificate pinned, so only the secret differs) is refused before any request
    const stranger = JobAuth.generate('job-t').withTls(auth.tls!);
    const e = await TcpStore.connect(server.url, { auth: stranger, connectTimeoutMs: 3000, timeoutMs: 3000 }).then(
      async (c) => (await c.close(), undefined),
      (x: unknown) => x,
    );
    assert.ok(e instanceof Error, 'a client with another secret connected to the commit store');
  } finally {
    await client.close();
    await server.close();
  }
});

test('store: a damaged part fails with ERR_DATA naming the commit', async () => {
  const store = new MemoryStore();
  const c = new StoreCommits(store, 'memory store', 1000);
  await c.save(bytes(3000, 7));
  await store.set('elastic/commit/1/0', bytes(3000, 8)); // the slot of commit 1, overwritten
  const e = await c.load().then(() => undefined, (x: unknown) => x);
  assert.ok(isShoalError(e, 'ERR_DATA') && /commit 1 is damaged/.test(e.message), String(e));
});

test.run();
