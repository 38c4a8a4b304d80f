import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { assertBytes, checkRecvIntoTimeout, expectCode, guard, later, openPair, patternBytes, transportConformance, type ConformanceEnv } from './conformance.js';
import { JobAuth } from '../security/job-auth.js';
import { JobTls } from '../security/job-tls.js';
import { NetTransport, parseNetUrl } from './net.js';
import { dataEvents } from './net-direct-input.js';
import { dialerHandshake } from './net-handshake.js';

const auth = JobAuth.generate('net-test');
const peer = { module: new URL('./net.js', import.meta.url).href, factory: 'createNetTransport', auth };
const dir = mkdtempSync(join(tmpdir(), 'shoal-net-'));
let seq = 0;

transportConformance('net tcp', async () => ({ transport: new NetTransport({ auth }), listenUrl: () => 'tcp://127.0.0.1:0', peer })).run();
transportConformance('net ipc', async () => ({
  transport: new NetTransport({ auth }),
  listenUrl: () => `ipc://${join(dir, `c${++seq}.sock`)}`,
  peer,
})).run();

const s = suite('net transport specifics');
const env = (): ConformanceEnv => ({ transport: new NetTransport({ auth }), listenUrl: () => 'tcp://127.0.0.1:0' });
/** A raw socket that completes the (authenticated) handshake with `l` and then writes `bytes`. */
async function rawPeer(url: string, bytes: Buffer): Promise<net.Socket> {
  const { port } = parseNetUrl(url) as { port: number };
  const sock = net.connect({ host: '127.0.0.1', port });
  sock.on('error', () => {});
  await new Promise((r) => sock.once('connect', r));
  await dialerHandshake(sock, dataEvents(sock), { auth, maxMessageBytes: 2 ** 31 - 1, where: url, timeoutMs: 5_000 });
  sock.write(bytes);
  return sock;
}

s('parses URLs and rejects bad ones with a message naming the URL', () => {
  assert.equal(parseNetUrl('tcp://127.0.0.1:0'), { scheme: 'tcp', host: '127.0.0.1', port: 0 });
  assert.equal(parseNetUrl('tcp://[::1]:5000'), { scheme: 'tcp', host: '::1', port: 5000 });
  assert.equal(parseNetUrl('ipc:///tmp/a.sock'), { scheme: 'ipc', path: '/tmp/a.sock' });
  assert.throws(() => parseNetUrl('udp://x:1'), /udp:\/\/x:1/);
  assert.throws(() => parseNetUrl('tcp://host'), /tcp:\/\/host/);
  assert.throws(() => parseNetUrl('tcp://h:70000'), /70000/);
});

s('port 0 resolves to the real port in listener.url; infinite timeouts do not fire at once', guard('port 0', 10_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const port = (parseNetUrl(l.url) as { port: number }).port;
  assert.ok(port > 0, l.url);
  const [a, b] = await Promise.all([l.accept({ timeoutMs: Infinity }), t.dial(l.url, { timeoutMs: Infinity })]);
  const got = later(a.recv({ timeoutMs: Infinity }));
  await new Promise((r) => setTimeout(r, 50));
  await b.send(new Uint8Array([5]), { timeoutMs: Infinity });
  assert.equal([...(await got)], [5]);
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('closing a listener drops connections still in their handshake (no lingering timers)', guard('listener close', 10_000, async () => {
  const t = new NetTransport({ auth, handshakeTimeoutMs: 60_000 });
  const l = await t.listen('tcp://127.0.0.1:0');
  const { port } = parseNetUrl(l.url) as { port: number };
  const silent = net.connect({ host: '127.0.0.1', port });
  silent.on('error', () => {});
  await new Promise((r) => silent.once('connect', r));
  await new Promise((r) => setTimeout(r, 50));
  const closed = new Promise((r) => silent.once('close', r));
  silent.resume();
  await l.close();
  await closed; // the listener destroyed it instead of waiting 60 s for its handshake
}));

s('a garbage frame header fails the connection with ERR_BAD_FRAME (no crash), on pending and later recvs', guard('garbage header', 10_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const sock = await rawPeer(l.url, Buffer.from('GET / HTTP/1.1\r\n\r\n'));
  const a = await l.accept({ timeoutMs: 5_000 });
  const e = await expectCode(a.recv({ timeoutMs: 5_000 }), 'ERR_BAD_FRAME', 'recv of a garbage frame');
  assert.match(e.message, /magic/);
  await expectCode(a.recv({ timeoutMs: 5_000 }), 'ERR_BAD_FRAME', 'later recv');
  sock.destroy();
  await a.close();
  await l.close();
}));

s('an oversized frame length fails with ERR_BAD_FRAME naming the limit', guard('oversized', 10_000, async () => {
  const t = new NetTransport({ auth, maxMessageBytes: 1024 });
  const l = await t.listen('tcp://127.0.0.1:0');
  const hdr = Buffer.alloc(8);
  hdr.writeUInt32LE(0x464c4853, 0);
  hdr.writeUInt32LE(0xffffffff, 4);
  const sock = await rawPeer(l.url, hdr);
  const a = await l.accept({ timeoutMs: 5_000 });
  const e = await expectCode(a.recv({ timeoutMs: 5_000 }), 'ERR_BAD_FRAME', 'recv of an oversized frame');
  assert.match(e.message, /4294967295 bytes, above maxMessageBytes 1024/);
  sock.destroy();
  await a.close();
  await l.close();
}));

s('a stray connection with a bad handshake does not take the listener slot', guard('bad handshake', 10_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const { port } = parseNetUrl(l.url) as { port: number };
  const stray = net.connect({ host: '127.0.0.1', port });
  stray.on('error', () => {});
  await new Promise((r) => stray.once('connect', r));
  stray.write('SSH-2.0-OpenSSH_9.2\r\n');
  await new Promise((r) => stray.once('close', r)); // the listener drops it
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
  await b.send(new Uint8Array([42]));
  assert.equal([...(await a.recv({ timeoutMs: 5_000 }))], [42]);
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('a send above the peer\'s maxMessageBytes is refused on the sender with a RangeError', guard('peer max', 10_000, async () => {
  const small = new NetTransport({ auth, maxMessageBytes: 100 });
  const big = new NetTransport({ auth });
  const l = await small.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), big.dial(l.url, { timeoutMs: 5_000 })]);
  try {
    await b.send(new Uint8Array(101));
    assert.unreachable('should refuse');
  } catch (e) {
    assert.instance(e, RangeError);
    assert.match(String(e), /101.*100/);
  }
  await b.send(new Uint8Array(100));
  assert.is((await a.recv({ timeoutMs: 5_000 })).byteLength, 100);
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('messages sent before close are delivered before ERR_PEER_CLOSED; a peer gone mid-message says so', guard('drain then closed', 10_000, async () => {
  const p = await openPair(env());
  for (let i = 0; i < 5; i++) await p.a.send(patternBytes(1000 + i, i));
  await p.a.close();
  await new Promise((r) => setTimeout(r, 50));
  for (let i = 0; i < 5; i++) assertBytes(await p.b.recv({ timeoutMs: 5_000 }), patternBytes(1000 + i, i), `message ${i}`);
  await expectCode(p.b.recv({ timeoutMs: 5_000 }), 'ERR_PEER_CLOSED', 'after the queued messages');
  await p.close();

  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const hdr = Buffer.alloc(8 + 10);
  hdr.writeUInt32LE(0x464c4853, 0);
  hdr.writeUInt32LE(1000, 4);
  const sock = await rawPeer(l.url, hdr);
  const a = await l.accept({ timeoutMs: 5_000 });
  const pending = a.recv({ timeoutMs: 5_000 });
  await new Promise((r) => setTimeout(r, 50));
  sock.destroy();
  const e = await expectCode(pending, 'ERR_PEER_CLOSED', 'peer gone mid-message');
  assert.match(e.message, /10 of 1000 bytes/);
  await a.close();
  await l.close();
}));

s('received small messages are 8-byte aligned and independent; a slow reader pauses the socket without loss', guard('alignment', 20_000, async () => {
  const p = await openPair({ transport: new NetTransport({ auth, recvHighWaterBytes: 1 << 20 }), listenUrl: () => 'tcp://127.0.0.1:0' });
  const sends: Promise<void>[] = [];
  for (let i = 0; i < 200; i++) sends.push(p.a.send(patternBytes(i === 0 ? 5 : 64 * 1024 + i, i)));
  await new Promise((r) => setTimeout(r, 100)); // let the receiver hit its high-water mark
  for (let i = 0; i < 200; i++) {
    const m = await p.b.recv({ timeoutMs: 5_000 });
    assert.is(m.byteOffset % 8, 0);
    assertBytes(m, patternBytes(i === 0 ? 5 : 64 * 1024 + i, i), `message ${i}`);
  }
  await Promise.all(sends);
  await p.close();
}));

s('options.allocate: large messages are assembled in caller-supplied buffers; a bad allocator fails the connection', guard('allocate', 15_000, async () => {
  const given: Uint8Array[] = [];
  const pooled = new NetTransport({
    auth,
    allocate: (n) => {
      const u = new Uint8Array(n);
      given.push(u);
      return u;
    },
  });
  const plain = new NetTransport({ auth });
  // Receive on the pooled side: first as the listener, then as the dialer (both read directly into the buffer).
  for (const side of ['listener', 'dialer'] as const) {
    given.length = 0;
    const l = await (side === 'listener' ? pooled : plain).listen('tcp://127.0.0.1:0');
    const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), (side === 'listener' ? plain : pooled).dial(l.url, { timeoutMs: 5_000 })]);
    const [rx, tx] = side === 'listener' ? [a, b] : [b, a];
    for (const n of [100, 5000, 3 << 20]) {
      const m = patternBytes(n, n);
      const [, got] = await Promise.all([tx.send(m), rx.recv({ timeoutMs: 5_000 })]);
      assertBytes(got, m, `${n} B`);
      if (n > 4096) assert.ok(given.includes(got), `${n} B message was not assembled in an allocated buffer`);
    }
    assert.is(given.length, 2);
    await Promise.all([a.close(), b.close(), l.close()]);
  }
  const dialer = new NetTransport({ auth, allocate: (n) => new Uint8Array(n - 1) });
  const l = await new NetTransport({ auth }).listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), dialer.dial(l.url, { timeoutMs: 5_000 })]);
  await a.send(new Uint8Array(10_000));
  const e = await expectCode(b.recv({ timeoutMs: 5_000 }), 'ERR_TRANSPORT', 'recv with an allocator of the wrong size');
  assert.match(e.message, /10000-byte receive buffer/);
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('both ends read large messages straight into their buffers (the accepted socket too), over tcp and ipc', guard('direct reads', 15_000, async () => {
  const t = new NetTransport({ auth });
  for (const url of ['tcp://127.0.0.1:0', `ipc://${join(dir, 'direct.sock')}`]) {
    const l = await t.listen(url);
    const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
    for (const [tx, rx, side] of [[b, a, 'accepted'], [a, b, 'dialed']] as const) {
      const m = patternBytes(3 << 20, 7);
      const [, got] = await Promise.all([tx.send(m), rx.recv({ timeoutMs: 5_000 })]);
      assertBytes(got, m, `${side} side, ${url}`);
      const direct = (rx as unknown as { directBytes: number }).directBytes;
      assert.ok(direct > (2 << 20), `${side} side over ${url}: ${direct} of ${3 << 20} bytes read directly`);
    }
    await Promise.all([a.close(), b.close(), l.close()]);
  }
}));

s('recvInto lands a large message in the given buffer (waiting first, or its start already read); other sizes get their own', guard('recvInto', 15_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
  const big = patternBytes(3 << 20, 11);
  const dst = new Uint8Array(big.byteLength);
  // waiting first
  const p = a.recvInto!(dst, { timeoutMs: Infinity });
  await b.send(big);
  const got = await p;
  assert.ok(got === dst, 'resolves with dst itself');
  assertBytes(got, big, 'waiting first');
  // the RPC reader's pattern: a small frame, then the big message asked for once the frame is in
  let hits = 0;
  for (let i = 0; i < 5; i++) {
    const dst2 = new Uint8Array(big.byteLength);
    const sent = Promise.all([b.send(new Uint8Array([1, 2, 3])), b.send(big)]);
    const head = await a.recv({ timeoutMs: 5_000 });
    assert.equal([...head], [1, 2, 3]);
    const got2 = await a.recvInto!(dst2, { timeoutMs: Infinity });
    await sent;
    assertBytes(got2, big, `frame then body #${i}`);
    if (got2 === dst2) hits++;
  }
  assert.ok(hits >= 1, 'a body whose start was already read is taken over');
  // another size: its own buffer, dst untouched
  const other = new Uint8Array(big.byteLength + 8);
  const got3 = (await Promise.all([a.recvInto!(other, { timeoutMs: Infinity }), b.send(big)]))[0];
  assert.ok(got3 !== other && other.every((x) => x === 0), 'another size does not use dst');
  assertBytes(got3, big, 'other size');
  // small messages: as recv
  const got4 = (await Promise.all([a.recvInto!(new Uint8Array(3), { timeoutMs: Infinity }), b.send(new Uint8Array([7, 8, 9]))]))[0];
  assert.equal([...got4], [7, 8, 9]);
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('recvInto posted behind other receives lands each message in its own buffer before its frame arrives', guard('recvInto ahead', 15_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
  const size = 1 << 20;
  for (let round = 0; round < 3; round++) {
    // a process group's pattern: header, body, header, body, ... all posted before anything is sent
    const dsts = [0, 1, 2].map(() => new Uint8Array(size));
    const other = new Uint8Array(size); // posted for a message of another length: never written
    const posts = [
      a.recv({ timeoutMs: 5_000 }), a.recvInto!(dsts[0]!, { timeoutMs: Infinity }),
      a.recv({ timeoutMs: 5_000 }), a.recvInto!(dsts[1]!, { timeoutMs: Infinity }),
      a.recvInto!(other, { timeoutMs: Infinity }),
      a.recv({ timeoutMs: 5_000 }), a.recvInto!(dsts[2]!, { timeoutMs: Infinity }),
    ];
    const sent = [new Uint8Array([1]), patternBytes(size, round * 10), new Uint8Array([2]), patternBytes(size, round * 10 + 1), patternBytes(size + 8, 99), new Uint8Array([3]), patternBytes(size, round * 10 + 2)];
    await Promise.all(sent.map((m) => b.send(m)));
    const got = await Promise.all(posts);
    got.forEach((m, i) => assertBytes(m, sent[i]!, `round ${round} message ${i}`));
    assert.ok(got[1] === dsts[0] && got[3] === dsts[1] && got[6] === dsts[2], 'each large message landed in the buffer posted for it');
    assert.ok(got[4] !== other && other.every((x) => x === 0), 'a message of another length gets its own buffer');
  }
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('released receive buffers carry later messages of their length intact; foreign, small and doubly released ones are not reused', guard('release', 15_000, async () => {
  const t = new NetTransport({ auth, recvPoolBytes: 3 << 20 });
  const l = await t.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
  const recv = () => a.recv({ timeoutMs: 5_000 });
  const size = 1 << 20;
  const m1 = patternBytes(size, 1);
  const [, got1] = await Promise.all([b.send(m1), recv()]);
  assertBytes(got1, m1, 'first');
  a.release!(got1);
  a.release!(got1); // a second release of the same buffer is ignored (it must not be handed out twice)
  const [m2, m3] = [patternBytes(size, 2), patternBytes(size, 3)];
  const [, got2, got3] = await Promise.all([Promise.all([b.send(m2), b.send(m3)]), recv(), recv()]);
  assert.ok(got2.buffer === got1.buffer, 'the next message of that length lands in the released buffer');
  assert.ok(got3.buffer !== got1.buffer, 'a buffer released twice is handed out once');
  assertBytes(got2, m2, 'into the released buffer');
  assertBytes(got3, m3, 'the one after');
  // another length does not take it; a buffer the connection did not allocate, or a small message, is not pooled
  a.release!(got2);
  const mine = new Uint8Array(size);
  a.release!(mine);
  const small = patternBytes(1000, 4);
  const [, gotSmall] = await Promise.all([b.send(small), recv()]);
  a.release!(gotSmall);
  const [m4, m5] = [patternBytes(size + 8, 5), patternBytes(size, 6)];
  const [, got4, got5] = await Promise.all([Promise.all([b.send(m4), b.send(m5)]), recv(), recv()]);
  assert.ok(got4.buffer !== got2.buffer && got5.buffer === got2.buffer && got5.buffer !== mine.buffer, 'reused by length, own buffers only');
  assertBytes(got4, m4, 'other length');
  assertBytes(got5, m5, 'same length again');
  assert.ok(mine.every((x) => x === 0), 'a foreign buffer is never written');
  // the pool is bounded: releases beyond recvPoolBytes are dropped, and every message still arrives whole
  const many = await Promise.all([Promise.all([0, 1, 2, 3, 4].map((i) => b.send(patternBytes(size, 10 + i)))), ...[0, 1, 2, 3, 4].map(() => recv())]);
  const bufs = many.slice(1) as Uint8Array[];
  bufs.forEach((x, i) => assertBytes(x, patternBytes(size, 10 + i), `burst ${i}`));
  for (const x of bufs) a.release!(x);
  const again = await Promise.all([Promise.all([0, 1, 2, 3, 4].map((i) => b.send(patternBytes(size, 20 + i)))), ...[0, 1, 2, 3, 4].map(() => recv())]);
  const bufs2 = again.slice(1) as Uint8Array[];
  bufs2.forEach((x, i) => assertBytes(x, patternBytes(size, 20 + i), `second burst ${i}`));
  assert.is(bufs2.filter((x) => bufs.some((y) => y.buffer === x.buffer)).length, 3, 'three 1 MiB buffers fit a 3 MiB pool');
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('the default receive pool keeps the 33 segments a 2-rank exchange holds at once (window 16, 1 MiB)', guard('default pool', 20_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
  const size = 1 << 20;
  const count = 2 * 16 + 1;
  const burst = async (seed: number) => {
    const sent = Array.from({ length: count }, (_, i) => patternBytes(size, seed + i));
    const got = await Promise.all([Promise.all(sent.map((m) => b.send(m))), ...sent.map(() => a.recv({ timeoutMs: 5_000 }))]);
    const bufs = got.slice(1) as Uint8Array[];
    bufs.forEach((x, i) => assertBytes(x, sent[i]!, `burst ${seed} message ${i}`));
    return bufs;
  };
  const first = await burst(100);
  for (const x of first) a.release!(x);
  const second = await burst(200);
  assert.is(second.filter((x) => first.some((y) => y.buffer === x.buffer)).length, count, 'every message landed in a released buffer');
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('a recvInto with a deadline is a plain recv: one that times out while its body streams in leaves the caller buffer alone', guard('recvInto timeout', 20_000, async () => {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
  await checkRecvIntoTimeout(b, a, patternBytes(128 << 20, 5), 2);
  await Promise.all([a.close(), b.close(), l.close()]);
}));

s('ipc: the socket file is removed on close and a stale one is replaced', guard('ipc files', 10_000, async () => {
  const t = new NetTransport({ auth });
  const path = join(dir, 'stale.sock');
  const l = await t.listen(`ipc://${path}`);
  assert.ok(existsSync(path));
  await l.close();
  assert.not.ok(existsSync(path), 'socket file left behind');
  // Leave a stale socket file behind (as a killed process would), then listen again.
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(path, () => r()));
  const fs = await import('node:fs');
  const copy = join(dir, 'stale-keep.sock');
  fs.renameSync(path, copy); // keep the inode away from close()'s unlink
  await new Promise<void>((r) => srv.close(() => r()));
  fs.renameSync(copy, path);
  assert.ok(existsSync(path));
  const l2 = await t.listen(`ipc://${path}`);
  const [a, b] = await Promise.all([l2.accept({ timeoutMs: 5_000 }), t.dial(l2.url, { timeoutMs: 5_000 })]);
  await b.send(new Uint8Array([7]));
  assert.equal([...(await a.recv({ timeoutMs: 5_000 }))], [7]);
  await Promise.all([a.close(), b.close(), l2.close()]);
}));

s('dialing something that is not a shoal net listener fails fast with ERR_BAD_FRAME', guard('wrong service', 10_000, async () => {
  const srv = net.createServer((c) => {
    c.on('error', () => {});
    c.resume(); // read the client's handshake and its FIN, so the server can close
    c.end('HTTP/1.1 400 Bad Request\r\n\r\n');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  const t0 = Date.now();
  const e = await expectCode(new NetTransport({ auth }).dial(`tcp://127.0.0.1:${port}`, { timeoutMs: 5_000 }), 'ERR_BAD_FRAME', 'dial of an HTTP server');
  assert.match(e.message, /not a shoal net peer/);
  assert.ok(Date.now() - t0 < 2_000);
  await new Promise<void>((r) => srv.close(() => r()));
}));

s('a send that times out (peer not reading) fails the connection; the peer sees ERR_PEER_CLOSED', guard('send timeout', 20_000, async () => {
  const p = await openPair({ transport: new NetTransport({ auth, recvHighWaterBytes: 1 << 20 }), listenUrl: () => 'tcp://127.0.0.1:0' });
  const big = new Uint8Array(32 << 20);
  // b never calls recv: after its 1 MiB high-water mark it stops reading, the kernel buffers fill, a's send stalls.
  await p.a.send(big, { timeoutMs: 5_000 }).catch(() => {});
  const e = await expectCode(p.a.send(big, { timeoutMs: 200 }), 'ERR_TIMEOUT', 'send to a peer that does not read');
  assert.match(e.message, /send of 33554432 bytes/);
  await expectCode(p.a.send(new Uint8Array(1)), 'ERR_PEER_CLOSED', 'send after the failed send');
  // b drains what arrived whole, then learns the connection is gone.
  let got = 0;
  for (;;) {
    try {
      const m = await p.b.recv({ timeoutMs: 5_000 });
      assert.is(m.byteLength, big.byteLength);
      got++;
    } catch (err) {
      assert.is((err as { code?: string }).code, 'ERR_PEER_CLOSED');
      break;
    }
  }
  assert.ok(got <= 2);
  await p.close();
}));

/**
 * A peer in a worker thread (its own event loop) that dials `url`, receives one message, closes, and then sets
 * `flag[0]` to 1 (2 if it failed).
 */
function closingPeer(url: string, a: JobAuth, flag: Int32Array): Worker {
  const code = `
    const { workerData: d } = require('node:worker_threads');
    const done = (v) => { Atomics.store(d.flag, 0, v); Atomics.notify(d.flag, 0); };
    (async () => {
      const { NetTransport } = await import(d.net);
      const { JobAuth } = await import(d.jobAuth);
      const b = await new NetTransport({ auth: JobAuth.fromEnv(d.jobId, d.env) }).dial(d.url, { timeoutMs: 10000 });
      await b.recv({ timeoutMs: 10000 });
      await b.close();
      done(1);
    })().catch((e) => { done(2); throw e; });`;
  const workerData = { net: new URL('./net.js', import.meta.url).href, jobAuth: new URL('../security/job-auth.js', import.meta.url).href, jobId: a.jobId, env: a.childEnv(), url, flag };
  return new Worker(code, { eval: true, workerData });
}

// cluster-launch.test.ts's --tls case failed 1 run in 30 with ERR_PEER_CLOSED: in a 2-rank allreduce the peer
// read our last segment, finished and closed, and its FIN was read before our send's write callback (with TLS it
// comes on a later turn of the event loop), so a completed collective broke. Made deterministic here: the send
// is issued from the check phase and this thread blocks until the peer (another thread) has closed.
for (const tls of [false, true]) {
  s(`a send the peer read before it closed resolves; receives then fail ERR_PEER_CLOSED (${tls ? 'TLS' : 'plain TCP'})`, guard('peer reads and closes', 30_000, async () => {
    const a = tls ? auth.withTls(await JobTls.generate('net-test')) : auth;
    const t = new NetTransport({ auth: a });
    for (let i = 0; i < 5; i++) {
      const l = await t.listen('tcp://127.0.0.1:0');
      const flag = new Int32Array(new SharedArrayBuffer(4));
      const w = closingPeer(l.url, a, flag);
      w.on('error', () => {}); // reported through `flag`
      const c = await l.accept({ timeoutMs: 10_000 });
      try {
        await new Promise((r) => setImmediate(r));
        const pending = later(c.recv({ timeoutMs: 10_000 }));
        const sent = c.send(patternBytes(20, i));
        // after the tick that writes the frame to the socket: wait (blocking this event loop) for the peer's close
        process.nextTick(() => Atomics.wait(flag, 0, 0, 10_000));
        await sent;
        assert.is(flag[0], 1, 'the peer received the message and closed');
        await expectCode(pending, 'ERR_PEER_CLOSED', 'recv pending when the peer closed');
        await expectCode(c.recv({ timeoutMs: 10_000 }), 'ERR_PEER_CLOSED', 'recv after the peer closed');
        await expectCode(c.send(new Uint8Array(1), { timeoutMs: 10_000 }), 'ERR_PEER_CLOSED', 'send after the peer closed');
      } finally {
        await c.close();
        await l.close();
        await w.terminate();
      }
    }
  }));
}

s.after(() => rmSync(dir, { recursive: true, force: true }));
s.run();
