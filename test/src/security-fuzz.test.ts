// Issue #15: the seeded fuzzer against the nng and shm listeners (security.test.ts covers the store, net ring
// listeners and actor doors). nng: thousands of raw TCP connections at a PAIR1 listener (random bytes, SP headers
// with frame lengths up to 2^64-1, valid headers with bad bodies, half-open sockets). shm: segments scribbled
// with random bytes (ring indices, lengths) through /dev/shm before and after a rogue claims them, and rogue
// dialers with wrong secrets. Every listener process (this one) must not crash or hang, must stay within +64 MiB
// RSS and +1 GiB virtual memory, and real peers must still connect and exchange exact bytes afterwards.
import { closeSync, openSync, writeSync, fstatSync } from 'node:fs';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AuthLog, JobAuth, NngTransport, shmTransport, type Connection, type Transport } from '@shoal/core';
import { listSegments } from '@shoal/core/transport';
import { guard, rng, vmKiB } from './security-helpers.js';



/** Peak RSS and virtual memory growth over `body`, sampled by `sample()` calls inside it. */
function memoryWatch(): { sample(): void; report(what: string): void } {
  global.gc?.();
  const rss0 = vmKiB('VmRSS');
  const vm0 = vmKiB('VmSize');
  let rss = rss0;
  let vm = vm0;
  return {
    sample() {
      rss = Math.max(rss, vmKiB('VmRSS'));
      vm = Math.max(vm, vmKiB('VmSize'));
    },
    report(what) {
      const dRss = (rss - rss0) / 1024;
      const dVm = (vm - vm0) / 1024;
      console.log(`${what}: peak RSS +${dRss.toFixed(1)} MiB, virtual +${dVm.toFixed(1)} MiB`);
      assert.ok(dRss < 64, `${what}: RSS grew by ${dRss.toFixed(1)} MiB (bound 64 MiB)`);
      assert.ok(dVm < 1024, `${what}: virtual memory grew by ${dVm.toFixed(1)} MiB (bound 1 GiB)`);
    },
  };
}

/** A real pair over `t` still works: exact bytes both ways. */
async function realPair(t: Transport, listenUrl: string): Promise<void> {
  const l = await t.listen(listenUrl);
  try {
    const [a, b] = (await Promise.all([l.accept({ timeoutMs: 15_000 }), t.dial(l.url, { timeoutMs: 15_000 })])) as [Connection, Connection];
    const big = Uint8Array.from({ length: 300_000 }, (_, i) => (i * 7) & 0xff);
    await b.send(big);
    const got = await a.recv({ timeoutMs: 10_000 });
    assert.equal(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(big)), 0, 'exact bytes');
    await a.send(new Uint8Array([4, 5, 6]));
    assert.equal([...(await b.recv({ timeoutMs: 10_000 }))], [4, 5, 6]);
    await Promise.all([a.close(), b.close()]);
  } finally {
    await l.close();
  }
}

const rejected: string[] = [];
const auth = JobAuth.generate('fuzz-job', new AuthLog((l) => void rejected.push(l)));

// ---- nng -------------------------------------------------------------------------------------------------------

const SP_HEADER = Buffer.from([0, 0x53, 0x50, 0, 0, 0x11, 0, 0]);

/** One fuzz connection at an nng PAIR1 listener on `port`. */
async function fuzzNng(port: number, r: () => number): Promise<void> {
  const sock = await new Promise<net.Socket | undefined>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', () => resolve(undefined));
  });
  if (!sock) return;
  sock.on('error', () => {});
  sock.on('data', () => {});
  const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
  const len64 = () => {
    const b = Buffer.alloc(8);
    const k = Math.floor(r() * 4);
    // 2^64-1, 2^32-1, a random u32, a small length with a body that does not match
    if (k === 0) b.fill(0xff);
    else if (k === 1) b.writeUInt32BE(0xffffffff, 4);
    else if (k === 2) b.writeUInt32BE(Math.floor(r() * 2 ** 32), 4);
    else b.writeUInt32BE(Math.floor(r() * 128), 4);
    return b;
  };
  const kind = Math.floor(r() * 6);
  if (kind === 0) sock.write(rand(Math.floor(r() * 4096)));
  else if (kind === 1) sock.write(Buffer.concat([SP_HEADER, len64(), rand(Math.floor(r() * 256))]));
  else if (kind === 2) sock.write(Buffer.concat([SP_HEADER, Buffer.from([0, 0, 0, 0, 0, 0, 0, 36, 0, 0, 0, 1]), rand(32)])); // a PAIR1 frame with a nonce-sized bogus body
  else if (kind === 3) sock.write(Buffer.concat([SP_HEADER.subarray(0, 5), Buffer.from([Math.floor(r() * 256)]), rand(8)])); // another protocol
  else if (kind === 4) sock.write(SP_HEADER.subarray(0, Math.floor(r() * 8))); // half a header, then silence
  // kind 5: connect and say nothing (half-open)
  await new Promise((res) => setTimeout(res, Math.floor(r() * 30)));
  if (r() < 0.5) sock.end();
  else sock.destroy();
}

test('fuzz nng: 2000 seeded connections at a PAIR1 listener; no crash, no hang, bounded memory, real peers unaffected', guard('nng fuzz', 120_000, async () => {
  const r = rng(0x5eed16);
  const t = new NngTransport({ auth, handshakeTimeoutMs: 2_000 });
  // nng's threads and their malloc arenas come with the first pairs (~0.8 GiB of address space on this machine,
  // barely any of it resident): start them before the baseline, so the bound measures the fuzz alone.
  await realPair(t, 'tcp://127.0.0.1:0');
  await realPair(t, 'tcp://127.0.0.1:0');
  const mem = memoryWatch();
  // A fresh listener per batch: a pair keeps its first SP peer, so a rogue's handshake timeout bounds each batch.
  const total = 2000;
  for (let done = 0; done < total; done += 100) {
    const l = await t.listen('tcp://127.0.0.1:0');
    const port = Number(/:(\d+)$/.exec(l.url)![1]);
    const acc = l.accept({ timeoutMs: 30_000 }).then(
      (c) => c.close().then(() => 'accepted'),
      (e: unknown) => (e as { code?: string }).code ?? String(e),
    );
    await Promise.all(Array.from({ length: 100 }, () => fuzzNng(port, r)));
    await l.close();
    const outcome = await acc;
    assert.is(outcome, 'ERR_CLOSED', 'no fuzz connection became the pair peer');
    mem.sample();
  }
  await realPair(t, 'tcp://127.0.0.1:0');
  mem.sample();
  mem.report('nng fuzz');
}));

// ---- shm -------------------------------------------------------------------------------------------------------

/** Scribble `writes` random runs of bytes over the segment file behind `url` (its header and rings). */
function scribble(url: string, r: () => number, writes: number): boolean {
  const path = `/dev/shm/${url.slice('shm://'.length)}`;
  let fd: number;
  try {
    fd = openSync(path, 'r+');
  } catch {
    return false; // already unlinked (both ends attached)
  }
  try {
    const size = fstatSync(fd).size;
    for (let i = 0; i < writes; i++) {
      // mostly the first pages (indices, lengths, flags), sometimes anywhere in the rings
      const at = r() < 0.7 ? Math.floor(r() * Math.min(size, 8192)) : Math.floor(r() * size);
      const n = Math.min(1 + Math.floor(r() * 16), size - at);
      const b = Buffer.alloc(n);
      for (let j = 0; j < n; j++) b[j] = r() < 0.3 ? 0xff : Math.floor(r() * 256);
      writeSync(fd, b, 0, n, at);
    }
  } finally {
    closeSync(fd);
  }
  return true;
}

test('fuzz shm: 150 listeners with scribbled segments and rogue dialers; no crash, no hang, bounded memory', guard('shm fuzz', 150_000, async () => {
  const r = rng(0x5eed17);
  const prefix = `fuzz-${process.pid}`;
  const t = shmTransport({ prefix, auth, ringBytes: 1 << 16 });
  const rogue = shmTransport({ prefix, auth: JobAuth.generate('fuzz-job', new AuthLog(() => {})), ringBytes: 1 << 16 });
  const mem = memoryWatch();
  const outcomes = new Map<string, number>();
  const count = (k: string) => outcomes.set(k, (outcomes.get(k) ?? 0) + 1);
  const codeOf = (e: unknown) => (e as { code?: string }).code ?? 'Error';
  for (let i = 0; i < 150; i++) {
    const l = await t.listen('shm://auto');
    const kind = i % 3;
    // 0: scribbled before anyone attaches, then a real dialer; 1: a rogue dialer (wrong secret) on a scribbled
    // segment; 2: a rogue dialer, scribbling while the handshake runs
    if (kind !== 2) scribble(l.url, r, 1 + Math.floor(r() * 24));
    const dialer = kind === 0 ? t : rogue;
    const acc = l.accept({ timeoutMs: 1_000 }).then(
      (c) => c,
      (e: unknown) => codeOf(e),
    );
    const dial = dialer.dial(l.url, { timeoutMs: 1_000 }).then(
      (c) => c,
      (e: unknown) => codeOf(e),
    );
    if (kind === 2) {
      await new Promise((res) => setTimeout(res, Math.floor(r() * 3)));
      scribble(l.url, r, 1 + Math.floor(r() * 24));
    }
    const [a, d] = await Promise.all([acc, dial]);
    if (typeof a === 'string') count(`accept ${a}`);
    else {
      // a pair that survived the scribbling: it may carry garbage, but never crashes or hangs the listener
      count(kind === 0 ? 'accept ok (real dialer)' : 'accept ok (ROGUE)');
      await a.recv({ timeoutMs: 200 }).catch(() => {});
      await a.close();
    }
    if (typeof d !== 'string') await d.close();
    await l.close();
    if (i % 10 === 0) mem.sample();
  }
  console.log(`shm fuzz outcomes: ${JSON.stringify(Object.fromEntries(outcomes))}`);
  assert.is(outcomes.get('accept ok (ROGUE)') ?? 0, 0, 'no rogue dialer was accepted');
  await realPair(t, 'shm://auto');
  mem.sample();
  mem.report('shm fuzz');
  assert.equal(listSegments(prefix), [], 'no segment left in /dev/shm');
}));

test.run();
