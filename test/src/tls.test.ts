// Issue #15, `--tls`: a job's TCP connections (store, net transport, actor and ps links) under TLS 1.3 with a
// per-job certificate pinned by every peer. A job trains with --tls exactly as without; a peer presenting another
// certificate (or none) is refused with an error naming the certificates; the bytes on the wire, captured
// through a loopback proxy, never contain a known tensor or store value (and do without --tls: the check can
// fail). Loopback only; every case is bounded by a guard.
import * as net from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Field, Float32, Int32, List, RecordBatch, Table, makeData, tableToIPC } from 'apache-arrow';
import { AuthLog, isShoalError, JobAuth, JobTls, NetTransport, parseWorkerOptions, TcpStore, TcpStoreServer } from '@shoal/core';
import { launch, parseRunArgs } from '@shoal/run';
import { guard } from './security-helpers.js';


const logged: string[] = [];
const jobTls = await JobTls.generate('tls-job');
const plainAuth = JobAuth.generate('tls-job', new AuthLog((l) => void logged.push(l)));
const auth = plainAuth.withTls(jobTls);
/** The same job secret, another certificate: what a peer of another job (or an attacker with the secret) has. */
const otherCert = auth.withTls(await JobTls.generate('tls-job'));

/** A loopback TCP proxy to `target` that records every byte in both directions. */
async function captureProxy(target: number): Promise<{ port: number; bytes(): Buffer; close(): Promise<void> }> {
  const seen: Buffer[] = [];
  const socks = new Set<net.Socket>();
  const server = net.createServer((a) => {
    const b = net.connect({ host: '127.0.0.1', port: target });
    for (const s of [a, b]) {
      socks.add(s);
      s.on('error', () => {});
      s.on('close', () => (a.destroy(), b.destroy()));
    }
    a.on('data', (c) => (seen.push(Buffer.from(c)), b.write(c)));
    b.on('data', (c) => (seen.push(Buffer.from(c)), a.write(c)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes: () => Buffer.concat(seen),
    close: () => {
      for (const s of socks) s.destroy();
      return new Promise<void>((r) => server.close(() => r()));
    },
  };
}
const portOf = (url: string) => Number(/:(\d+)\/?$/.exec(url)![1]);

/** A known tensor: 16 Ki float32 values no stream of random bytes would contain. */
const tensor = Float32Array.from({ length: 16384 }, (_, i) => 1000 + i * 0.25);
const tensorBytes = Buffer.from(tensor.buffer);

/** Send `tensor` and a store value through a capturing proxy under `a`; return what the proxy saw. */
async function wireBytes(a: JobAuth): Promise<Buffer> {
  const t = new NetTransport({ auth: a });
  const l = await t.listen('tcp://127.0.0.1:0');
  const proxy = await captureProxy(portOf(l.url));
  const server = await TcpStoreServer.start({ auth: a });
  const storeProxy = await captureProxy(portOf(server.url));
  try {
    const [x, y] = await Promise.all([l.accept({ timeoutMs: 10_000 }), t.dial(`tcp://127.0.0.1:${proxy.port}`, { timeoutMs: 10_000 })]);
    await y.send(new Uint8Array(tensorBytes.buffer, tensorBytes.byteOffset, tensorBytes.byteLength));
    const got = await x.recv({ timeoutMs: 10_000 });
    assert.equal(Buffer.compare(Buffer.from(got.buffer, got.byteOffset, got.byteLength), tensorBytes), 0, 'the tensor arrived intact');
    await x.send(got);
    await y.recv({ timeoutMs: 10_000 });
    await Promise.all([x.close(), y.close()]);
    const c = await TcpStore.connect(`tcp://127.0.0.1:${storeProxy.port}`, { auth: a, timeoutMs: 10_000 });
    await c.set('addr/rank-0', 'tcp://10.9.8.7:6543 the-store-value');
    assert.is(new TextDecoder().decode(await c.get('addr/rank-0')), 'tcp://10.9.8.7:6543 the-store-value');
    await c.close();
    return Buffer.concat([proxy.bytes(), storeProxy.bytes()]);
  } finally {
    await Promise.all([l.close(), proxy.close(), storeProxy.close()]);
    await server.close();
  }
}

test('the wire under --tls: no byte of a known tensor or store value in clear (and in clear without it)', guard('capture', 40_000, async () => {
  const sample = tensorBytes.subarray(4096, 4096 + 32);
  const clear = await wireBytes(plainAuth);
  assert.ok(clear.includes(sample), 'control: without TLS the proxy sees the tensor');
  assert.ok(clear.includes(Buffer.from('the-store-value')), 'control: without TLS the proxy sees the store value');
  const wire = await wireBytes(auth);
  assert.ok(wire.byteLength > 2 * tensorBytes.byteLength, `the proxy carried the traffic (${wire.byteLength} bytes)`);
  // no 32-byte window of the tensor, at any of 64 places, nor the value, nor shoal's own handshake magic
  for (let off = 0; off + 32 <= tensorBytes.byteLength; off += tensorBytes.byteLength / 64) {
    assert.not.ok(wire.includes(tensorBytes.subarray(off, off + 32)), `tensor bytes at ${off} seen in clear`);
  }
  assert.not.ok(wire.includes(Buffer.from('the-store-value')), 'store value seen in clear');
  assert.not.ok(wire.includes(Buffer.from('SHOALNET')), 'shoal handshake seen in clear');
  assert.is(wire[0], 0x16, 'the connection opens with a TLS handshake record');
}));

test('another certificate is refused with an error naming both fingerprints, at the store and a ring listener', guard('pinning', 40_000, async () => {
  const server = await TcpStoreServer.start({ auth });
  const t = new NetTransport({ auth, handshakeTimeoutMs: 3_000 });
  const l = await t.listen('tcp://127.0.0.1:0');
  try {
    const before = logged.length;
    // a client with the right secret but another certificate: it sees the job's certificate is not the one it pins
    for (const dial of [
      () => TcpStore.connect(server.url, { auth: otherCert, connectTimeoutMs: 3_000 }),
      () => new NetTransport({ auth: otherCert }).dial(l.url, { timeoutMs: 3_000 }),
    ]) {
      const e = await dial().then(
        () => undefined,
        (x: unknown) => x,
      );
      assert.ok(isShoalError(e, 'ERR_AUTH'), `ERR_AUTH, got ${String(e)}`);
      assert.match((e as Error).message, new RegExp(`presented TLS certificate ${jobTls.fingerprint}, not this job's ${otherCert.tls!.fingerprint}`));
    }
    // a listener with another certificate: the job's dialer refuses it, naming the address
    const rogueL = await new NetTransport({ auth: otherCert }).listen('tcp://127.0.0.1:0');
    const e = await t.dial(rogueL.url, { timeoutMs: 3_000 }).then(() => undefined, (x: unknown) => x);
    assert.ok(isShoalError(e, 'ERR_AUTH'), String(e));
    assert.match((e as Error).message, new RegExp(`${rogueL.url.replace(/[/.]/g, '\\$&')}.*not this job's ${jobTls.fingerprint}`));
    await rogueL.close();
    // a rogue dialer presenting another certificate (the listener checks it): logged with its address
    const raw = (await import('node:tls')).connect({ host: '127.0.0.1', port: portOf(l.url), rejectUnauthorized: false, ...(await selfSignedPair()) });
    await new Promise<void>((r) => (raw.once('close', () => r()), raw.on('error', () => {})));
    // a plaintext peer (no --tls) at a TLS listener
    const plain = await TcpStore.connect(server.url, { auth: plainAuth, connectTimeoutMs: 1_500 }).then(() => undefined, (x: unknown) => x);
    assert.ok(isShoalError(plain), String(plain));
    const lines = logged.slice(before).join('\n');
    assert.match(lines, new RegExp(`presented TLS certificate [0-9A-F:]+, not this job's ${jobTls.fingerprint}`), lines);
    assert.match(lines, /does not speak TLS/, lines);
    // the store and the listener still serve the job
    const c = await TcpStore.connect(server.url, { auth, timeoutMs: 5_000 });
    await c.set('k', 'v');
    await c.close();
    const [x, y] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
    await y.send(new Uint8Array([9]));
    assert.equal([...(await x.recv({ timeoutMs: 5_000 }))], [9]);
    await Promise.all([x.close(), y.close()]);
  } finally {
    await l.close();
    await server.close();
  }
}));

test('300 seeded junk connections at a TLS store and ring listener: no crash, no hang, both still serve', guard('tls fuzz', 60_000, async () => {
  let a = 0x7157 >>> 0;
  const r = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const server = await TcpStoreServer.start({ auth });
  const t = new NetTransport({ auth, handshakeTimeoutMs: 2_000 });
  const l = await t.listen('tcp://127.0.0.1:0');
  const pair = await selfSignedPair();
  const tlsMod = await import('node:tls');
  try {
    const before = auth.log.rejected;
    const one = async (port: number) => {
      const kind = Math.floor(r() * 4);
      const rand = Buffer.from(Array.from({ length: Math.floor(r() * 2048) }, () => Math.floor(r() * 256)));
      // 0: random bytes; 1: a TLS record header announcing 2^14+ bytes, then junk; 2: a TLS client with another
      // job's certificate that then sends junk; 3: connect and say nothing
      const s =
        kind === 2
          ? tlsMod.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ...pair })
          : net.connect({ host: '127.0.0.1', port });
      s.on('error', () => {});
      await new Promise<void>((res) => (s.once(kind === 2 ? 'secureConnect' : 'connect', () => res()), s.once('close', () => res())));
      if (kind === 0) s.write(rand);
      else if (kind === 1) s.write(Buffer.concat([Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), rand]));
      else if (kind === 2 && !s.destroyed) s.write(rand);
      await new Promise((res) => setTimeout(res, Math.floor(r() * 20)));
      s.destroy();
    };
    for (let done = 0; done < 300; done += 30) {
      await Promise.all(Array.from({ length: 30 }, (_, i) => one(portOf(i % 2 ? server.url : l.url))));
    }
    assert.ok(auth.log.rejected - before >= 150, `rejected ${auth.log.rejected - before}`);
    const c = await TcpStore.connect(server.url, { auth, timeoutMs: 5_000 });
    await c.set('after', 'fuzz');
    assert.is(new TextDecoder().decode(await c.get('after')), 'fuzz');
    await c.close();
    const [x, y] = await Promise.all([l.accept({ timeoutMs: 5_000 }), t.dial(l.url, { timeoutMs: 5_000 })]);
    await y.send(new Uint8Array([7, 7]));
    assert.equal([...(await x.recv({ timeoutMs: 5_000 }))], [7, 7]);
    await Promise.all([x.close(), y.close()]);
  } finally {
    await l.close();
    await server.close();
  }
}));

/** Another job's certificate and key as PEM, for a raw node:tls client. */
async function selfSignedPair(): Promise<{ cert: string; key: string }> {
  const other = await JobTls.generate('rogue');
  const [certB64, keyB64] = other.line().split('.');
  const pem = (label: string, b64: string) => `-----BEGIN ${label}-----\n${b64.match(/.{1,64}/g)!.join('\n')}\n-----END ${label}-----\n`;
  return { cert: pem('CERTIFICATE', certB64!), key: pem('PRIVATE KEY', keyB64!) };
}

test('SHOAL_JOB_TLS: parsed with the secret, never printed; bad values are ERR_CONFIG naming it; nng refuses it', () => {
  const env: Record<string, string> = { SHOAL_WORLD_SIZE: '2', SHOAL_RANK: '1', SHOAL_STORE: 'tcp://127.0.0.1:1', SHOAL_JOB_ID: 'tls-job', ...auth.childEnv() };
  const o = parseWorkerOptions(env);
  assert.is(o.auth.tls?.fingerprint, jobTls.fingerprint);
  const line = env.SHOAL_JOB_TLS!;
  for (const s of [String(o.auth), JSON.stringify(o), String(o.auth.tls), JSON.stringify(o.auth.tls)]) assert.not.ok(s.includes(line.split('.')[1]!), `key leaked in ${s}`);
  for (const [bad, why] of [
    ['x', /base64 DER certificate/],
    [`${line.split('.')[0]}.${otherCert.tls!.line().split('.')[1]}`, /key that does not belong/],
  ] as const) {
    assert.throws(() => parseWorkerOptions({ ...env, SHOAL_JOB_TLS: bad }), (e: unknown) => isShoalError(e, 'ERR_CONFIG') && /SHOAL_JOB_TLS/.test((e as Error).message) && why.test((e as Error).message));
  }
  assert.throws(() => parseWorkerOptions({ ...env, SHOAL_TRANSPORT: 'nng' }), /nng cannot carry/);
  assert.is(parseRunArgs(['-n', '2', '--tls', 'x.js']).tls, true);
  assert.throws(() => parseRunArgs(['-n', '2', '--tls', '--transport', 'nng', 'x.js']), /--tls needs --transport net/);
});

// --- a job trains with --tls -------------------------------------------------------------------------------------

const REPO = new URL('../..', import.meta.url).pathname;
const WORKER = join(REPO, 'test/dist/fit-worker.js');
const dir = mkdtempSync(join(tmpdir(), 'shoal-tls-'));

/** The first 400 digits as two Arrow parts (`pixels` list<float32>, `label`). */
function writeDigits(root: string): void {
  mkdirSync(root, { recursive: true });
  const lines = gunzipSync(readFileSync(join(REPO, 'data/digits/digits.csv.gz'))).toString().trim().split('\n').slice(0, 400);
  for (let p = 0; p < 2; p++) {
    const rows = lines.slice(p * 200, (p + 1) * 200).map((l) => l.split(',').map(Number));
    const px = Float32Array.from(rows.flatMap((v) => v.slice(0, 64).map((x) => x / 16)));
    const list = new List(new Field('element', new Float32(), false));
    const cols = {
      pixels: makeData({ type: list, length: 200, nullCount: 0, valueOffsets: Int32Array.from({ length: 201 }, (_, i) => i * 64), child: makeData({ type: new Float32(), length: px.length, data: px }) }),
      label: makeData({ type: new Int32(), length: 200, data: Int32Array.from(rows.map((v) => v[64]!)) }),
    };
    writeFileSync(join(root, `part-${p}.arrow`), tableToIPC(new Table([new RecordBatch(cols as never)]), 'file'));
  }
}

interface FitResult {
  history: { loss: number }[];
  weights: number[];
  tls: string | null;
}

async function fit(extra: Partial<Parameters<typeof launch>[0]>): Promise<FitResult> {
  const out: string[] = [];
  const err: string[] = [];
  const r = await launch({
    script: WORKER,
    numWorkers: 2,
    data: join(dir, 'digits'),
    args: ['--epochs', '2'],
    timeoutMs: 60_000,
    jobTimeoutMs: 120_000,
    stdout: new Writable({ write: (c, _e, cb) => (out.push(String(c)), cb()) }),
    stderr: new Writable({ write: (c, _e, cb) => (err.push(String(c)), cb()) }),
    ...extra,
  });
  assert.is(r.code, 0, `job failed: ${r.error}\n${err.join('').slice(-3000)}`);
  const line = out.join('').split('\n').find((l) => l.includes('SHOAL_RESULT '));
  assert.ok(line, 'rank 0 printed a SHOAL_RESULT line');
  return JSON.parse(line!.split('SHOAL_RESULT ')[1]!) as FitResult;
}

test('shoal run --tls: ring over net and ps over tcp links train, with the weights of a run without TLS', guard('jobs', 240_000, async () => {
  writeDigits(join(dir, 'digits'));
  const plain = await fit({ transport: 'net' });
  const ring = await fit({ transport: 'net', tls: true });
  assert.is(plain.tls, null);
  assert.match(String(ring.tls), /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/, 'the workers pinned the job certificate');
  assert.ok(ring.history[1]!.loss < ring.history[0]!.loss, `loss fell: ${ring.history.map((h) => h.loss).join(' -> ')}`);
  assert.equal(ring.weights, plain.weights, 'TLS changes nothing in the result');
  const ps = await fit({ transport: 'net', backend: 'ps', psLink: 'tcp', tls: true });
  assert.ok(ps.tls !== null && ps.tls !== ring.tls, 'each job has its own certificate');
  assert.ok(ps.history[1]!.loss < ps.history[0]!.loss, `ps loss fell: ${ps.history.map((h) => h.loss).join(' -> ')}`);
}));

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
