// nng transport cases beyond the shared conformance suite (nng-conformance.test.ts): addon loading, options,
// load, memory, close mid-transfer timing, worker threads, and interop with `nngcat` (Debian nng-utils).
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError } from '../errors.js';
import { assertBytes, expectCode, guard, openPair, patternBytes, type ConformanceEnv } from './conformance.js';
import { JobAuth } from '../security/job-auth.js';
import { loadNngAddon } from './nng-addon.js';
import { createNngTransport, NngTransport } from './nng.js';

const auth = JobAuth.generate('nng-test');

const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'shoal-nng-t-'));
let seq = 0;
const ipcUrl = () => `ipc://${dir}/t${++seq}.sock`;
const text = (s: string) => new TextEncoder().encode(s);
const untext = (b: Uint8Array) => new TextDecoder().decode(b);
const env = (t: NngTransport, url: () => string): ConformanceEnv => ({ transport: t, listenUrl: url });

test.after(() => rmSync(dir, { recursive: true, force: true }));

test('a missing addon is a clear ERR_TRANSPORT that says how to build it', () => {
  try {
    createNngTransport({ addonPath: join(dir, 'nope.node') });
    assert.unreachable('should throw');
  } catch (e) {
    assert.ok(isShoalError(e, 'ERR_TRANSPORT'), String(e));
    assert.match((e as Error).message, /npm run build:native/);
    assert.match((e as Error).message, /libnng-dev/);
  }
});

test('bad urls and options are rejected with errors that name them', async () => {
  const t = createNngTransport({ auth });
  assert.is(t.nngVersion, '1.5.2');
  for (const url of ['http://x:1', 'tcp://127.0.0.1', 'ipc://', '']) {
    try {
      await t.listen(url);
      assert.unreachable(`listen ${url} should throw`);
    } catch (e) {
      assert.instance(e, RangeError);
      assert.match((e as Error).message, /url/);
    }
  }
  assert.throws(() => createNngTransport({ auth, maxMessageBytes: -1 }), /maxMessageBytes/);
  assert.throws(() => createNngTransport({ auth, reconnectMinMs: 0 }), /reconnectMinMs/);
  // Listening twice on one address is an ERR_TRANSPORT naming it.
  const l = await t.listen('tcp://127.0.0.1:0');
  try {
    await expectCode(t.listen(l.url), 'ERR_TRANSPORT', 'second listen on the same port');
  } finally {
    await l.close();
  }
});

test('tcp://127.0.0.1:0 reports the bound port in listener.url', async () => {
  const t = createNngTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const m = /^tcp:\/\/127\.0\.0\.1:(\d+)$/.exec(l.url);
  assert.ok(m && Number(m[1]) > 0, l.url);
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5000 }), t.dial(l.url, { timeoutMs: 5000 })]);
  await b.send(text('port ok'));
  assert.is(untext(await a.recv({ timeoutMs: 5000 })), 'port ok');
  await Promise.all([a.close(), b.close(), l.close()]);
});

test('a message above maxMessageBytes fails the receiver with ERR_BAD_FRAME, the sender sees the peer close', async () => {
  const small = createNngTransport({ auth, maxMessageBytes: 1000 });
  const big = createNngTransport({ auth });
  const l = await small.listen('tcp://127.0.0.1:0');
  const [a, b] = await Promise.all([l.accept({ timeoutMs: 5000 }), big.dial(l.url, { timeoutMs: 5000 })]);
  try {
    await b.send(new Uint8Array(1000)); // exactly the limit passes
    assert.is((await a.recv({ timeoutMs: 5000 })).byteLength, 1000);
    const r = a.recv({ timeoutMs: 5000 });
    r.catch(() => {}); // checked below; may reject while the send is awaited
    await b.send(new Uint8Array(1001)).catch(() => {});
    await expectCode(r, 'ERR_BAD_FRAME', 'recv of an oversized message');
    await expectCode(b.recv({ timeoutMs: 5000 }), 'ERR_PEER_CLOSED', 'sender after the receiver dropped it');
  } finally {
    await Promise.all([a.close(), b.close(), l.close()]);
  }
});

/** A raw socket peer speaking the SP wire by hand (for bad-frame cases). Resolves once connected. */
async function rawPeer(url: string): Promise<Socket> {
  const sock = url.startsWith('ipc://') ? connect({ path: url.slice('ipc://'.length) }) : connect({ host: '127.0.0.1', port: Number(url.split(':').pop()) });
  await new Promise<void>((resolve, reject) => {
    sock.once('connect', resolve);
    sock.once('error', reject);
  });
  sock.on('error', () => {});
  sock.resume(); // read (and drop) what the listener sends, so its close is seen
  return sock;
}
const spHeader = (proto: number) => Buffer.from([0, 0x53, 0x50, 0, proto >> 8, proto & 0xff, 0, 0]);
const tcpFrame = (len: bigint, body: Buffer) => {
  const h = Buffer.alloc(8);
  h.writeBigUInt64BE(len);
  return Buffer.concat([h, body]);
};

test('bad frames: a frame without the PAIR1 header, or a wrong ipc frame type, fails recv with ERR_BAD_FRAME', async () => {
  // Frame parsing after the connection is up: without the job handshake, which would turn the raw peer away first.
  const t = createNngTransport({ unauthenticated: true });
  for (const [url, frame] of [
    ['tcp://127.0.0.1:0', tcpFrame(2n, Buffer.from([1, 2]))],
    [ipcUrl(), Buffer.concat([Buffer.from([7]), tcpFrame(5n, Buffer.from([0, 0, 0, 1, 9]))])],
  ] as const) {
    const l = await t.listen(url);
    const raw = await rawPeer(l.url);
    try {
      raw.write(spHeader(0x11));
      const a = await l.accept({ timeoutMs: 5000 });
      const r = a.recv({ timeoutMs: 5000 });
      r.catch(() => {});
      raw.write(frame);
      await expectCode(r, 'ERR_BAD_FRAME', `recv after a bad frame on ${url}`);
      await expectCode(a.recv({ timeoutMs: 5000 }), 'ERR_BAD_FRAME', 'later recv');
      await expectCode(a.send(text('x')), 'ERR_BAD_FRAME', 'send after a bad frame');
      await a.close();
    } finally {
      raw.destroy();
      await l.close();
    }
  }
});

test('bad handshake: a peer of another SP protocol is turned away and the listener still pairs', async () => {
  const t = createNngTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const raw = await rawPeer(l.url);
  try {
    const closed = new Promise<void>((r) => raw.once('close', () => r()));
    raw.write(spHeader(0x30)); // REQ0
    await expectCode(l.accept({ timeoutMs: 300 }), 'ERR_TIMEOUT', 'accept of a REQ0 peer');
    await closed; // the listener dropped it
    const [a, b] = await Promise.all([l.accept({ timeoutMs: 5000 }), t.dial(l.url, { timeoutMs: 5000 })]);
    await b.send(text('after bad peer'));
    assert.is(untext(await a.recv({ timeoutMs: 5000 })), 'after bad peer');
    await Promise.all([a.close(), b.close()]);
  } finally {
    raw.destroy();
    await l.close();
  }
});

for (const [scheme, url] of [['tcp', () => 'tcp://127.0.0.1:0'], ['ipc', ipcUrl]] as const) {
  test(`${scheme}: 1000 messages in flight each way, with 1000 recvs posted up front, arrive in order`, async () => {
    await guard('1000 in flight', 30_000, async () => {
      const p = await openPair(env(createNngTransport({ auth }), url));
      try {
        const N = 1000;
        const msg = (i: number, s: number) => patternBytes((i * 997) % 70_000, i + s);
        const recvA = Array.from({ length: N }, () => p.a.recv({ timeoutMs: 20_000 }));
        const recvB = Array.from({ length: N }, () => p.b.recv({ timeoutMs: 20_000 }));
        const sends = [...Array.from({ length: N }, (_, i) => p.a.send(msg(i, 0))), ...Array.from({ length: N }, (_, i) => p.b.send(msg(i, 5000)))];
        const [gotB, gotA] = await Promise.all([Promise.all(recvB), Promise.all(recvA), Promise.all(sends)]);
        for (let i = 0; i < N; i++) {
          assertBytes(gotB[i]!, msg(i, 0), `a->b ${i}`);
          assertBytes(gotA[i]!, msg(i, 5000), `b->a ${i}`);
        }
      } finally {
        await p.close();
      }
    })();
  });

  test(`${scheme}: closing either end mid-transfer of 64 MiB settles both ends within 2 s`, async () => {
    const t = createNngTransport({ auth });
    const big = patternBytes(64 * MiB + 4, 1);
    for (const closer of ['sender', 'receiver'] as const) {
      for (const delayMs of [1, 10, 30]) {
        const p = await openPair(env(t, url));
        const sending = p.a.send(big, { timeoutMs: 20_000 });
        const receiving = p.b.recv({ timeoutMs: 20_000 });
        sending.catch(() => {});
        receiving.catch(() => {});
        await new Promise((r) => setTimeout(r, delayMs));
        const t0 = Date.now();
        await (closer === 'sender' ? p.a : p.b).close();
        await Promise.allSettled([sending, receiving]);
        await p.close();
        const took = Date.now() - t0;
        assert.ok(took < 2000, `${closer} close after ${delayMs} ms: took ${took} ms`);
      }
    }
  });
}

test('send without its flush flag (JS layer and addon out of step) is a TypeError, not a silent stall', async () => {
  // Per-tick coalescing made the addon start a write only on a send flagged flush; a caller that omits the flag
  // (a stale JS build against a new addon) used to queue forever: the peer's recv timed out, the send never settled.
  await guard('flush flag', 10_000, async () => {
    const addon = loadNngAddon();
    const K = addon.constants;
    const waitFor = () => {
      let done!: () => void;
      const p = new Promise<void>((r) => (done = r));
      return { p, done };
    };
    const up = waitFor();
    const got = waitFor();
    const closedRx = waitFor();
    const closedTx = waitFor();
    let ups = 0;
    const lens: number[] = [];
    const onUp = () => void (++ups === 2 && up.done());
    const rx = new addon.NngPair((kind, _id, _rv, data, l) => {
      if (kind === K.EV_CONNECTED) onUp();
      if (kind === K.EV_MSGS) lens.push(...l!);
      if (kind === K.EV_MSG) lens.push(data!.byteLength);
      if (lens.length === 2) got.done();
      if (kind === K.EV_CLOSED) closedRx.done();
    }, MiB);
    const tx = new addon.NngPair((kind) => {
      if (kind === K.EV_CONNECTED) onUp();
      if (kind === K.EV_CLOSED) closedTx.done();
    }, MiB);
    rx.ref();
    tx.ref();
    try {
      tx.dial(`tcp://127.0.0.1:${rx.listen('tcp://127.0.0.1:0')}`);
      await up.p;
      const send = tx.send as (id: number, data: Uint8Array, flush?: unknown) => void;
      assert.throws(() => send.call(tx, 1, new Uint8Array(10)), /boolean flush/);
      assert.throws(() => send.call(tx, 1, new Uint8Array(10), 1), /boolean flush/);
      // The flagged protocol still works: the unflagged message waits for the flush of the next.
      tx.send(1, new Uint8Array(10), false);
      tx.send(2, new Uint8Array(20), true);
      await got.p;
      assert.equal(lens, [10, 20]);
    } finally {
      rx.close();
      tx.close();
      await Promise.all([closedRx.p, closedTx.p]);
    }
  })();
});

test('per-tick coalescing loses no flush: 100k x 1 KiB in one tick, and mixed 1 KiB / 20 KiB / 1 MiB runs both ways from recv continuations', async () => {
  await guard('coalescing', 20_000, async () => {
    const p = await openPair(env(createNngTransport({ auth }), () => 'tcp://127.0.0.1:0'));
    try {
      const N = 100_000;
      const kib = patternBytes(1024, 3);
      const sends = Array.from({ length: N }, () => p.a.send(kib));
      for (let i = 0; i < N; i++) assert.is((await p.b.recv({ timeoutMs: 10_000 })).byteLength, 1024, `message ${i}`);
      await Promise.all(sends);
      // Mixed sizes crossing the 16 KiB zero-copy threshold; b echoes each from its recv continuation while a
      // keeps sending in uneven bursts.
      const sizes = [1024, 20 * 1024, 16 * 1024, 16 * 1024 + 1, 0, MiB, 1024];
      const M = 700;
      const echo = (async () => {
        for (let i = 0; i < M; i++) void p.b.send(await p.b.recv({ timeoutMs: 10_000 }));
      })();
      const burst: Promise<void>[] = [];
      for (let i = 0; i < M; ) {
        for (let k = 1 + (i % 37); k > 0 && i < M; k--, i++) burst.push(p.a.send(patternBytes(sizes[i % sizes.length]!, i)));
        await Promise.resolve();
      }
      for (let i = 0; i < M; i++) assertBytes(await p.a.recv({ timeoutMs: 10_000 }), patternBytes(sizes[i % sizes.length]!, i), `echo ${i}`);
      await Promise.all([...burst, echo]);
    } finally {
      await p.close();
    }
  })();
});

test('receive backpressure: past recvHighWaterBytes the reader stops, sends wait, nothing is lost', async () => {
  const t = createNngTransport({ auth, recvHighWaterBytes: 2 * MiB });
  const p = await openPair(env(t, () => 'tcp://127.0.0.1:0'));
  try {
    const N = 64;
    let sent = 0;
    const sends = Array.from({ length: N }, (_, i) => p.a.send(patternBytes(MiB, i), { timeoutMs: 20_000 }).then(() => void sent++));
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(sent < N, `all ${N} MiB were sent while nobody received (no backpressure)`);
    for (let i = 0; i < N; i++) assertBytes(await p.b.recv({ timeoutMs: 10_000 }), patternBytes(MiB, i), `message ${i}`);
    await Promise.all(sends);
    assert.is(sent, N);
  } finally {
    await p.close();
  }
});

test('closing with 200 sends queued (natively and in JS) to a stalled peer rejects every one ERR_CLOSED at once', async () => {
  const t = createNngTransport({ auth, recvHighWaterBytes: MiB });
  const p = await openPair(env(t, () => 'tcp://127.0.0.1:0'));
  const sends = Array.from({ length: 200 }, (_, i) => p.a.send(patternBytes(MiB, i), { timeoutMs: 20_000 }));
  for (const s of sends) s.catch(() => {}); // inspected below
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await p.a.close();
  const results = await Promise.allSettled(sends);
  assert.ok(Date.now() - t0 < 2000, `sends settled ${Date.now() - t0} ms after close`);
  const rejected = results.filter((r) => r.status === 'rejected');
  assert.ok(rejected.length > 100, `only ${rejected.length} of 200 were still pending`);
  for (const r of rejected) assert.ok(isShoalError((r as PromiseRejectedResult).reason, 'ERR_CLOSED'), String((r as PromiseRejectedResult).reason));
  await p.close();
});

test('churn: 400 pairs (20 at a time, tcp and ipc) opened, used, closed from either end mid-message', async () => {
  const t = createNngTransport({ auth });
  const one = async (i: number) => {
    const l = await t.listen(i % 2 ? 'tcp://127.0.0.1:0' : ipcUrl());
    const [a, b] = await Promise.all([l.accept({ timeoutMs: 10_000 }), t.dial(l.url, { timeoutMs: 10_000 })]);
    const msg = patternBytes((i % 7) * 100_000 + 1, i);
    const s = a.send(msg, { timeoutMs: 10_000 });
    const r = b.recv({ timeoutMs: 10_000 });
    s.catch(() => {});
    r.catch(() => {});
    if (i % 3 === 0) assertBytes(await r, msg, `pair ${i}`);
    await Promise.all([(i % 2 ? a : b).close(), l.close()]);
    for (const x of await Promise.allSettled([s, r])) {
      if (x.status === 'rejected') assert.ok(isShoalError(x.reason) && x.reason.code !== 'ERR_TIMEOUT', `pair ${i}: ${String(x.reason)}`);
    }
    await Promise.all([a.close(), b.close()]);
  };
  await guard('churn', 45_000, async () => {
    for (let round = 0; round < 20; round++) await Promise.all(Array.from({ length: 20 }, (_, j) => one(round * 20 + j)));
  })();
});

test('receive memory is released: 30 one-way 64 MiB messages keep RSS bounded', async () => {
  setFlagsFromString('--expose-gc');
  const gc = runInNewContext('gc') as () => void;
  const t = createNngTransport({ auth });
  const p = await openPair(env(t, () => 'tcp://127.0.0.1:0'));
  try {
    const big = patternBytes(64 * MiB, 2);
    const once = async () => {
      const [, got] = await Promise.all([p.a.send(big), p.b.recv({ timeoutMs: 20_000 })]);
      assert.is(got.byteLength, big.byteLength);
      assert.is(got[got.length - 1], big[big.length - 1]);
    };
    for (let i = 0; i < 3; i++) await once();
    gc();
    const before = process.memoryUsage().rss;
    for (let i = 0; i < 30; i++) await once();
    gc();
    await new Promise((r) => setTimeout(r, 50));
    gc();
    const grew = (process.memoryUsage().rss - before) / MiB;
    assert.ok(grew < 400, `RSS grew by ${grew.toFixed(0)} MiB over 30 x 64 MiB messages (leak?)`);
  } finally {
    await p.close();
  }
});

test('an addon loaded only by a worker thread survives the worker exiting (nodelete)', () => {
  const mod = new URL('./nng.js', import.meta.url).href;
  const code = `
    import { Worker } from 'node:worker_threads';
    const w = new Worker(\`
      import(${JSON.stringify(mod)}).then(async ({ createNngTransport }) => {
        const t = createNngTransport();
        const l = await t.listen('tcp://127.0.0.1:0');
        const [a, b] = await Promise.all([l.accept({ timeoutMs: 5000 }), t.dial(l.url, { timeoutMs: 5000 })]);
        await a.send(new Uint8Array(1 << 20));
        await b.recv({ timeoutMs: 5000 });
        await Promise.all([a.close(), b.close()]);
        // Leave one socket open on purpose: the worker's teardown must not crash the process.
        await t.listen('tcp://127.0.0.1:0');
        process.exit(0);
      });
    \`, { eval: true });
    w.on('exit', (c) => setTimeout(() => { console.log('worker exited ' + c); }, 300));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
  assert.is(r.status, 0, `child exited ${r.status} ${r.signal}: ${r.stderr}`);
  assert.match(r.stdout, /worker exited 0/);
});

/** A TCP port that was free a moment ago (the OS picks it). */
async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as AddressInfo).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** Run nngcat with a hard time limit; resolves with its exit code and raw stdout. */
function nngcat(args: string[], limitMs = 15_000): { done: Promise<{ code: number | null; out: Buffer; err: string }> } {
  const child = spawn('nngcat', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  let err = '';
  child.stdout.on('data', (d: Buffer) => out.push(d));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), limitMs);
  const done = new Promise<{ code: number | null; out: Buffer; err: string }>((resolve) => {
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, out: Buffer.alloc(0), err: String(e) });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out: Buffer.concat(out), err });
    });
  });
  return { done };
}

// nngcat --pair1 with --data sends that message once, then prints (raw) every message it receives until
// --recv-timeout seconds pass without one, then exits 0.
const hasNngcat = spawnSync('nngcat', ['--version'], { encoding: 'utf8' }).status === 0;

for (const scheme of ['tcp', 'ipc'] as const) {
  test(`interop ${scheme}: nngcat --pair1 listens, shoal dials; messages flow both ways`, async () => {
    assert.ok(hasNngcat, 'nngcat (Debian nng-utils) is not installed');
    const t = createNngTransport({ unauthenticated: true }); // nngcat does not know the job handshake
    const url = scheme === 'tcp' ? `tcp://127.0.0.1:${await freePort()}` : ipcUrl();
    const cat = nngcat(['--pair1', '--listen', url, '--data', 'hello from nngcat', '--recv-timeout', '1', '--raw']);
    const c = await t.dial(url, { timeoutMs: 10_000 });
    try {
      assert.is(untext(await c.recv({ timeoutMs: 10_000 })), 'hello from nngcat');
      const msgs = [text('one|'), patternBytes(300_000, 4), text('|three')];
      for (const m of msgs) await c.send(m);
      const r = await cat.done;
      assert.is(r.code, 0, `nngcat exited ${r.code}: ${r.err}`);
      assertBytes(r.out, Buffer.concat(msgs), 'what nngcat printed');
      await expectCode(c.recv({ timeoutMs: 5000 }), 'ERR_PEER_CLOSED', 'recv after nngcat exited');
    } finally {
      await c.close();
    }
  });

  test(`interop ${scheme}: shoal listens, nngcat --pair1 dials; messages flow both ways`, async () => {
    assert.ok(hasNngcat, 'nngcat (Debian nng-utils) is not installed');
    const t = createNngTransport({ unauthenticated: true }); // nngcat does not know the job handshake
    const l = await t.listen(scheme === 'tcp' ? 'tcp://127.0.0.1:0' : ipcUrl());
    const cat = nngcat(['--pair1', '--dial', l.url, '--data', 'hi shoal', '--recv-timeout', '1', '--raw']);
    const c = await l.accept({ timeoutMs: 10_000 });
    try {
      assert.is(untext(await c.recv({ timeoutMs: 10_000 })), 'hi shoal');
      const msgs = [patternBytes(2 * MiB + 1, 5), text('end')];
      for (const m of msgs) await c.send(m);
      const r = await cat.done;
      assert.is(r.code, 0, `nngcat exited ${r.code}: ${r.err}`);
      assertBytes(r.out, Buffer.concat(msgs), 'what nngcat printed');
    } finally {
      await Promise.all([c.close(), l.close()]);
    }
  });
}

test.run();
