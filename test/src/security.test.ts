// Issue #15: only members of a job can read or write its store, call its actors, join its rings or push. Rogue
// clients (no secret, a wrong secret, a replayed handshake, a reflected proof) are turned away before any payload
// is parsed, and the job's results stay bit-identical; a seeded fuzzer (thousands of frames and connections) can
// neither crash, hang nor bloat a listener. Loopback only; every case is bounded by a guard.
import { createHmac } from 'node:crypto';
import * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { asText, AuthLog, connectGroup, isShoalError, JobAuth, loadKernels, MemoryStore, NetTransport, TcpStore, TcpStoreServer, type Connection, type Listener, type Transport } from '@shoal/core';
import { ActorClient, ActorServer } from '@shoal/core/actor';
import { CounterActor, expectCode } from '@shoal/core/testing';
import { allreduceRing } from '@shoal/backends/ring';
import { guard, rng, vmKiB } from './security-helpers.js';

/** Lines the job's AuthLog would print: kept here, so the test output stays readable. */
const logged: string[] = [];
const auth = JobAuth.generate('sec-job', new AuthLog((l) => void logged.push(l)));
/** A rogue's identity: the same job id, another secret. */
const rogueAuth = () => JobAuth.generate('sec-job', new AuthLog(() => {}));


const HELLO_MAGIC = Buffer.from('SHOALNET', 'latin1');
const hello = (nonce: Buffer) => Buffer.concat([HELLO_MAGIC, Buffer.from([2, 0, 0, 0, 0, 0, 0x40, 0]), nonce]);
/** A store `set` request frame: SHLF header, u32 JSON length, JSON, value. */
function setFrame(key: string, value: string, id = 1): Buffer {
  const json = Buffer.from(JSON.stringify({ id, op: 'set', key }));
  const v = Buffer.from(value);
  const head = Buffer.alloc(12);
  head.writeUInt32LE(0x464c4853, 0);
  head.writeUInt32LE(4 + json.length + v.length, 4);
  head.writeUInt32LE(json.length, 8);
  return Buffer.concat([head, json, v]);
}

function connectRaw(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}
/** Write `bytes`, collect what comes back until the peer closes (or `ms` pass). */
function exchange(sock: net.Socket, bytes: Buffer[], ms = 3_000): Promise<{ got: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    sock.on('error', () => {});
    sock.on('data', (c) => chunks.push(c));
    const t = setTimeout(() => (sock.destroy(), resolve({ got: Buffer.concat(chunks), closed: false })), ms);
    sock.once('close', () => (clearTimeout(t), resolve({ got: Buffer.concat(chunks), closed: true })));
    for (const b of bytes) sock.write(b);
  });
}
const portOf = (url: string) => Number(/:(\d+)\/?$/.exec(url)![1]);

test('store: no secret, a wrong secret, a replayed or reflected handshake cannot read or write a key', guard('store rogues', 30_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const good = await TcpStore.connect(server.url, { auth, timeoutMs: 5_000 });
  try {
    await good.set('secret/addr', 'tcp://10.1.2.3:4000');
    const before = auth.log.rejected;

    // 1. No secret: a store frame straight away (the server expects a handshake and reads no frame).
    const r1 = await exchange(await connectRaw(portOf(server.url)), [setFrame('rogue/1', 'x')]);
    assert.ok(r1.closed, 'closed');
    assert.not.ok(r1.got.includes(Buffer.from('tcp://10.1.2.3')), 'no value leaked');

    // 2. A wrong secret, same job id: ERR_AUTH on the client, nothing written.
    const wrong = rogueAuth();
    await expectCode(TcpStore.connect(server.url, { auth: wrong, connectTimeoutMs: 3_000 }), 'ERR_AUTH', 'connect with a wrong secret');

    // 3. Replay: record everything a real client sends (through a recording proxy), then send it again.
    const recorded: Buffer[] = [];
    const proxy = net.createServer((c) => {
      const up = net.connect({ host: '127.0.0.1', port: portOf(server.url) });
      c.on('data', (d) => (recorded.push(Buffer.from(d)), up.write(d)));
      up.on('data', (d) => c.write(d));
      c.on('close', () => up.destroy());
      up.on('close', () => c.destroy());
      c.on('error', () => {});
      up.on('error', () => {});
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', () => r()));
    const viaProxy = await TcpStore.connect(`tcp://127.0.0.1:${(proxy.address() as net.AddressInfo).port}`, { auth, timeoutMs: 5_000 });
    await viaProxy.set('replayed', 'v1');
    await viaProxy.close();
    proxy.close();
    await good.set('replayed', 'v2');
    const r3 = await exchange(await connectRaw(portOf(server.url)), recorded);
    assert.ok(r3.closed, 'a replayed handshake is closed');
    assert.is(asText(await good.get('replayed', 1_000)), 'v2', 'the replayed set did not happen');

    // 4. Reflection: answer the server's challenge with the server's own proof.
    const s4 = await connectRaw(portOf(server.url));
    s4.on('error', () => {});
    const challenge = await new Promise<Buffer>((resolve) => {
      let got = Buffer.alloc(0);
      s4.on('data', (d) => {
        got = Buffer.concat([got, d]);
        if (got.length >= 80) resolve(got);
      });
      s4.write(hello(Buffer.alloc(32, 7)));
    });
    const r4 = await exchange(s4, [challenge.subarray(48, 80), setFrame('rogue/4', 'x')]);
    assert.ok(r4.closed, 'a reflected proof is closed');

    // 5. A guessed proof over the published protocol (HMAC with a guessed key).
    const s5 = await connectRaw(portOf(server.url));
    const c5 = await new Promise<Buffer>((resolve) => {
      let got = Buffer.alloc(0);
      s5.on('data', (d) => ((got = Buffer.concat([got, d])), got.length >= 80 && resolve(got)));
      s5.write(hello(Buffer.alloc(32, 9)));
    });
    const guess = createHmac('sha256', Buffer.alloc(32)).update('shoal-auth-v1\0dialer>listener\0sec-job\0').update(Buffer.alloc(32, 9)).update(c5.subarray(16, 48)).digest();
    assert.ok((await exchange(s5, [guess, setFrame('rogue/5', 'x')])).closed, 'a guessed key is closed');

    for (const k of ['rogue/1', 'rogue/4', 'rogue/5']) await expectCode(good.get(k, 200), 'ERR_TIMEOUT', `key ${k} was never written`);
    assert.is(asText(await good.get('secret/addr', 1_000)), 'tcp://10.1.2.3:4000');
    assert.ok(auth.log.rejected - before >= 4, `rejections counted (${auth.log.rejected - before})`);
    assert.ok(logged.some((l) => l.includes('127.0.0.1:')), 'rejections are logged with the peer address');
  } finally {
    await good.close();
    await server.close();
  }
}));

test('store quotas: keys and bytes per job give ERR_QUOTA and keep the connection', guard('store quota', 10_000, async () => {
  const server = await TcpStoreServer.start({ auth, maxKeys: 3, maxBytes: 200 });
  const c = await TcpStore.connect(server.url, { auth, timeoutMs: 5_000 });
  try {
    await c.set('a', '1');
    await c.set('b', '2');
    await c.set('c', '3');
    const e = await expectCode(c.set('d', '4'), 'ERR_QUOTA', 'fourth key');
    assert.match(e.message, /maxKeys/);
    await c.set('a', 'replacing a key is fine');
    await expectCode(c.set('b', 'x'.repeat(300)), 'ERR_QUOTA', 'bytes');
    assert.is(asText(await c.get('b', 500)), '2', 'the refused write changed nothing');
    assert.is(server.keyCount, 3);
  } finally {
    await c.close();
    await server.close();
  }
}));

test('actors: a rogue cannot call any method (no secret, wrong secret, junk after a hello)', guard('actor rogues', 20_000, async () => {
  const store = new MemoryStore();
  const transport = new NetTransport({ auth });
  const actor = new CounterActor(5);
  const server = await ActorServer.start(actor, { name: 'counter', epoch: 1, store, transport, listenUrl: 'tcp://127.0.0.1:0', mailbox: 'serial' });
  try {
    const doors = await Promise.all([0, 1, 2].map(async (i) => asText(await store.get(`actor/counter/1/door/${i}`, 2_000))));
    const rogue = new NetTransport({ auth: rogueAuth() });
    await expectCode(rogue.dial(doors[0]!, { timeoutMs: 3_000 }), 'ERR_AUTH', 'dial a door with a wrong secret');
    // A request frame with no handshake, and a hello followed by junk instead of a proof.
    assert.ok((await exchange(await connectRaw(portOf(doors[1]!)), [Buffer.from('SHLF\x10\x00\x00\x00{"k":"q","m":"add"}')])).closed);
    assert.ok((await exchange(await connectRaw(portOf(doors[2]!)), [hello(Buffer.alloc(32, 1)), Buffer.alloc(32, 0xaa), Buffer.alloc(4096, 0x55)])).closed);
    const c = await ActorClient.connect<CounterActor>('counter', { store, transport, timeoutMs: 5_000 });
    assert.is(await c.api.value(), 5, 'no rogue call reached the actor');
    assert.is(await c.api.add(1), 6);
    await c.close();
  } finally {
    await server.stop();
  }
}));

/** A transport that lets a rogue (wrong secret) and a raw socket at every listener before the real peer comes. */
class Contested implements Transport {
  readonly name = 'net';
  readonly schemes = ['tcp'] as const;
  readonly attempts: Promise<unknown>[] = [];
  constructor(
    private readonly inner: NetTransport,
    private readonly rogue: NetTransport,
  ) {}
  async listen(url: string): Promise<Listener> {
    const l = await this.inner.listen(url);
    this.attempts.push(this.rogue.dial(l.url, { timeoutMs: 3_000 }).then(() => 'joined', (e) => (e as { code?: string }).code));
    this.attempts.push(connectRaw(portOf(l.url)).then((s) => exchange(s, [hello(Buffer.alloc(32, 3)), Buffer.alloc(32)], 2_000)).then((r) => (r.closed ? 'closed' : 'open')));
    return l;
  }
  dial(url: string): Promise<Connection> {
    return this.inner.dial(url, { timeoutMs: 10_000 });
  }
}

async function ringSum(contested: boolean): Promise<{ sums: Float32Array[]; attempts: unknown[] }> {
  const server = await TcpStoreServer.start({ auth });
  const kernels = await loadKernels();
  const rogue = new NetTransport({ auth: rogueAuth() });
  const ts = [0, 1, 2].map(() => (contested ? new Contested(new NetTransport({ auth }), rogue) : new NetTransport({ auth })));
  try {
    const stores = await Promise.all(ts.map(() => TcpStore.connect(server.url, { auth, timeoutMs: 10_000 })));
    const groups = await Promise.all(ts.map((t, rank) => connectGroup({ rank, size: 3, store: stores[rank]!.prefixed('ring'), transport: t, listenUrl: 'tcp://127.0.0.1:0', timeoutMs: 15_000 })));
    const sums = groups.map((_, r) => Float32Array.from({ length: 10_001 }, (_, i) => Math.sin(i * 0.37 + r) * 1e3 + r / 3));
    await Promise.all(groups.map((g, r) => allreduceRing(g, sums[r]!, { kernels })));
    await Promise.all(groups.map((g) => g.close()));
    await Promise.all(stores.map((s) => s.close()));
    const attempts = await Promise.all(ts.flatMap((t) => (t instanceof Contested ? t.attempts : [])));
    return { sums, attempts };
  } finally {
    await server.close();
  }
}

test('ring: rogues at every listener cannot join; the allreduce is bit-identical to a clean run', guard('ring rogues', 40_000, async () => {
  const clean = await ringSum(false);
  const contested = await ringSum(true);
  assert.ok(contested.attempts.length >= 6, `rogues tried every listener (${contested.attempts.length})`);
  for (const a of contested.attempts) assert.ok(a === 'ERR_AUTH' || a === 'closed' || a === 'ERR_PEER_CLOSED' || a === 'ERR_TIMEOUT', `a rogue got: ${String(a)}`);
  for (let r = 0; r < 3; r++) assert.equal(Buffer.compare(Buffer.from(contested.sums[r]!.buffer), Buffer.from(clean.sums[r]!.buffer)), 0, `rank ${r} bit-identical`);
}));


/** One fuzz connection against `port`: random bytes, valid headers with bad bodies, huge lengths, half-open. */
async function fuzzOne(port: number, r: () => number): Promise<void> {
  const sock = await connectRaw(port).catch(() => undefined);
  if (!sock) return;
  sock.on('error', () => {});
  const kind = Math.floor(r() * 6);
  const rand = (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(r() * 256)));
  const huge = () => {
    const h = Buffer.alloc(8);
    h.writeUInt32LE(0x464c4853, 0);
    h.writeUInt32LE(Math.floor(r() * 2 ** 32), 4);
    return h;
  };
  if (kind === 0) sock.write(rand(Math.floor(r() * 4096)));
  else if (kind === 1) sock.write(Buffer.concat([hello(rand(32)), rand(32), huge(), rand(64)]));
  else if (kind === 2) sock.write(Buffer.concat([huge(), rand(16)]));
  else if (kind === 3) sock.write(Buffer.concat([HELLO_MAGIC, Buffer.from([2, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]), rand(Math.floor(r() * 40))]));
  else if (kind === 4) sock.write(hello(rand(32)).subarray(0, Math.floor(r() * 48))); // half a hello, then silence
  // kind 5: connect and say nothing (half-open)
  await new Promise((res) => setTimeout(res, Math.floor(r() * 30)));
  if (r() < 0.5) sock.end();
  else sock.destroy();
}

test('fuzz: 3000 seeded connections at the store, a ring listener and an actor door: no crash, no hang, bounded memory, results unchanged', guard('fuzz', 90_000, async () => {
  const r = rng(0x5eed15);
  const server = await TcpStoreServer.start({ auth });
  const store = await TcpStore.connect(server.url, { auth, timeoutMs: 10_000 });
  await store.set('addr/0', 'tcp://127.0.0.1:1');
  const transport = new NetTransport({ auth, handshakeTimeoutMs: 2_000 });
  const ringListener = await transport.listen('tcp://127.0.0.1:0');
  const actorStore = new MemoryStore();
  const actor = await ActorServer.start(new CounterActor(0), { name: 'fz', epoch: 1, store: actorStore, transport, listenUrl: 'tcp://127.0.0.1:0', mailbox: 'serial' });
  const door = asText(await actorStore.get('actor/fz/1/door/0', 2_000));
  const targets = [portOf(server.url), portOf(ringListener.url), portOf(door)];
  global.gc?.();
  const rss0 = vmKiB('VmRSS');
  const vm0 = vmKiB('VmSize');
  let peakRss = rss0;
  let peakVm = vm0;
  try {
    const total = 3000;
    for (let done = 0; done < total; done += 60) {
      await Promise.all(Array.from({ length: 60 }, (_, i) => fuzzOne(targets[(done + i) % targets.length]!, r)));
      peakRss = Math.max(peakRss, vmKiB('VmRSS'));
      peakVm = Math.max(peakVm, vmKiB('VmSize'));
    }
    // Still serving, and nothing changed: the store's key, a real ring peer, a real actor caller.
    assert.is(asText(await store.get('addr/0', 2_000)), 'tcp://127.0.0.1:1');
    const [a, b] = await Promise.all([ringListener.accept({ timeoutMs: 10_000 }), transport.dial(ringListener.url, { timeoutMs: 10_000 })]);
    await b.send(new Uint8Array([1, 2, 3]));
    assert.equal([...(await a.recv({ timeoutMs: 5_000 }))], [1, 2, 3]);
    await Promise.all([a.close(), b.close()]);
    const c = await ActorClient.connect<CounterActor>('fz', { store: actorStore, transport, timeoutMs: 10_000 });
    assert.is(await c.api.add(2), 2, 'no fuzz frame reached the actor');
    await c.close();
    const dRss = (peakRss - rss0) / 1024;
    const dVm = (peakVm - vm0) / 1024;
    console.log(`fuzz: ${total} connections, peak RSS +${dRss.toFixed(1)} MiB, virtual +${dVm.toFixed(1)} MiB, ${auth.log.rejected} rejected in total`);
    assert.ok(dRss < 64, `RSS grew by ${dRss.toFixed(1)} MiB (bound 64 MiB)`);
    assert.ok(dVm < 1024, `virtual memory grew by ${dVm.toFixed(1)} MiB (bound 1 GiB)`);
  } finally {
    await store.close();
    await actor.stop();
    await ringListener.close();
    await server.close();
  }
}));

test('a secret is never printed: JobAuth shows its job id only', () => {
  const hex = auth.childEnv().SHOAL_JOB_SECRET!;
  for (const s of [String(auth), JSON.stringify(auth), JSON.stringify({ o: auth }), (auth as unknown as { [k: symbol]: () => string })[Symbol.for('nodejs.util.inspect.custom')]?.() ?? '']) {
    assert.not.ok(s.includes(hex), `leaked in ${s}`);
  }
  let err: unknown;
  try {
    JobAuth.fromEnv('x', {});
  } catch (e) {
    err = e;
  }
  assert.ok(isShoalError(err, 'ERR_CONFIG'), String(err));
  assert.match((err as Error).message, /SHOAL_JOB_SECRET/);
});

test.run();
