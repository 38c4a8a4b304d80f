/**
 * `npm run bench -- security [--connections 300] [--out FILE]`: what authentication costs (issue #15).
 *
 * - Connection set-up, p50/p99 over `--connections` sequential connections on loopback, interleaved:
 *   `tcp-hello` is a TCP connect plus one 16-byte hello each way (the shape of the net transport's handshake
 *   before #15, without authentication); `net-auth` is NetTransport dial + accept with the job handshake (48 B,
 *   80 B, 32 B, two HMAC-SHA256 each side); `store-auth` is `TcpStore.connect` plus one `get` answered at once
 *   (the first round trip a worker makes).
 *   `net-auth-tls` and `store-auth-tls` are the same under `--tls` (TLS 1.3 with the job's pinned certificate,
 *   then the job handshake inside it).
 * - Steady state over an authenticated net pair, and over one under TLS, interleaved (the handshake is the only
 *   cost of authentication, so the plain figures match the transport suite's): 8 B round-trip p50 and 64 MiB
 *   one-way throughput.
 *
 * Writes `bench/results/security.json`: `{ suite: 'security', version: 2, started, host: { cpus, node, loadavg1 },
 * setup: [{ name, connections, p50_us, p99_us, mean_us }], steady: [{ name, bytes, p50_us | gbps, p50_gbps,
 * samples }], tls_vs_plain: { net_setup_p50, store_setup_p50, rt_8b_p50, gbps_64mib_best, cross_rt_8b_p50,
 * cross_gbps_64mib_best } }` (ratios TLS / plain). The `cross-process` rows run the same against a
 * `transport-peer.js` child, so each process does its own end's crypto.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as net from 'node:net';
import { availableParallelism, loadavg } from 'node:os';
import { AuthLog, JobAuth, JobTls, NetTransport, TcpStore, TcpStoreServer, type Connection } from '@shoal/core';
import { BENCH_JOB_ID } from './bench-auth.js';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';

export const command = {
  name: 'bench security',
  synopsis: '[options]',
  description: 'connection set-up with and without authentication; steady state with it',
  options: {
    connections: { type: 'string', arg: 'N', help: 'connections per set-up case (default 300)' },
    out: { type: 'string', arg: 'FILE', help: 'result file (default bench/results/security.json)' },
  },
} as const satisfies CommandSpec;

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
};
const round = (x: number) => Math.round(x * 10) / 10;
const now = () => performance.now() * 1000; // microseconds

/** A TCP server answering every 16-byte hello with 16 bytes. */
async function helloServer(): Promise<{ port: number; close(): Promise<void> }> {
  const server = net.createServer({ noDelay: true }, (s) => {
    let got = 0;
    s.on('data', (d) => {
      got += d.length;
      if (got >= 16) s.write(Buffer.alloc(16, 1));
    });
    s.on('error', () => {});
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { port: (server.address() as net.AddressInfo).port, close: () => new Promise<void>((r) => server.close(() => r())) };
}

function tcpHello(port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = now();
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    let got = 0;
    s.once('connect', () => s.write(Buffer.alloc(16, 2)));
    s.on('data', (d) => {
      got += d.length;
      if (got >= 16) {
        const us = now() - t0;
        s.destroy();
        resolve(us);
      }
    });
    s.once('error', reject);
  });
}

/**
 * A net pair whose other end is a `transport-peer.js` child (each process does its own end's crypto), under `auth`
 * (its secret, and certificate if any, reach the child in its environment).
 */
async function crossProcessPair(auth: JobAuth): Promise<{ conn: Connection; close(): Promise<void> }> {
  const t = new NetTransport({ auth });
  const l = await t.listen('tcp://127.0.0.1:0');
  const peer = fileURLToPath(new URL('./transport-peer.js', import.meta.url));
  const child = spawn(process.execPath, [peer, JSON.stringify({ module: '@shoal/core', factory: 'createNetTransport', factoryArg: {}, url: l.url })], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, ...auth.childEnv() },
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const conn = await Promise.race([l.accept({ timeoutMs: 30_000 }), exited.then((c) => Promise.reject(new Error(`peer exited (${c}) before connecting`)))]);
  return {
    conn,
    close: async () => {
      await conn.send(new TextEncoder().encode(JSON.stringify({ op: 'exit' })));
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
      child.kill();
      await l.close();
    },
  };
}

/** Best-of throughput (GB/s) and 8 B round-trip samples over one connected pair. */
interface PairFigures {
  rt: number[];
  gbps: number[];
}

export async function run(args: string[]): Promise<void> {
  const v = parseCommand(command, args).values;
  const n = Number(v.connections ?? 300);
  if (!Number.isInteger(n) || n < 10) throw new RangeError(`bench security: --connections must be an integer >= 10, got ${v.connections}`);
  const auth = JobAuth.generate('bench-security', new AuthLog(() => {}));
  const tlsAuth = auth.withTls(await JobTls.generate('bench-security'));
  const hs = await helloServer();
  const kinds = [
    { suffix: '', auth, t: new NetTransport({ auth }) },
    { suffix: '-tls', auth: tlsAuth, t: new NetTransport({ auth: tlsAuth }) },
  ];
  const stores = await Promise.all(kinds.map((k) => TcpStoreServer.start({ auth: k.auth })));
  for (const [i, k] of kinds.entries()) {
    const seed = await TcpStore.connect(stores[i]!.url, { auth: k.auth });
    await seed.set('k', 'v');
    await seed.close();
  }
  const times: Record<string, number[]> = { 'tcp-hello': [], 'net-auth': [], 'net-auth-tls': [], 'store-auth': [], 'store-auth-tls': [] };
  for (let i = 0; i < n; i++) {
    times['tcp-hello']!.push(await tcpHello(hs.port));
    for (const [j, k] of kinds.entries()) {
      const l = await k.t.listen('tcp://127.0.0.1:0');
      const t0 = now();
      const [a, b] = await Promise.all([l.accept({ timeoutMs: 5_000 }), k.t.dial(l.url, { timeoutMs: 5_000 })]);
      times[`net-auth${k.suffix}`]!.push(now() - t0);
      await Promise.all([a.close(), b.close(), l.close()]);
      const t1 = now();
      const c = await TcpStore.connect(stores[j]!.url, { auth: k.auth });
      if (new TextDecoder().decode(await c.get('k')) !== 'v') throw new Error('store get returned the wrong value');
      times[`store-auth${k.suffix}`]!.push(now() - t1);
      await c.close();
    }
  }
  const setup = Object.entries(times).map(([name, xs]) => ({
    name,
    connections: xs.length,
    p50_us: round(pct(xs, 50)),
    p99_us: round(pct(xs, 99)),
    mean_us: round(xs.reduce((a, x) => a + x, 0) / xs.length),
  }));
  // Steady state over one pair of each kind, the two kinds interleaved round by round (the load hits both alike).
  const pairs = await Promise.all(
    kinds.map(async (k) => {
      const l = await k.t.listen('tcp://127.0.0.1:0');
      const [a, b] = await Promise.all([l.accept(), k.t.dial(l.url)]);
      return { a, b, l, fig: { rt: [], gbps: [] } as PairFigures };
    }),
  );
  const small = new Uint8Array(8);
  for (let round = 0; round < 6; round++) {
    for (const p of pairs) {
      for (let i = 0; i < 500; i++) {
        const t0 = now();
        await p.b.send(small);
        const m = await p.a.recv();
        await p.a.send(m);
        await p.b.recv();
        if (round > 0) p.fig.rt.push(now() - t0);
      }
    }
  }
  const big = new Uint8Array(64 << 20).fill(7);
  const reps = 8;
  for (let i = 0; i < reps; i++) {
    for (const p of pairs) {
      const t0 = now();
      const [, got] = await Promise.all([p.b.send(big), p.a.recv({ timeoutMs: 60_000 })]);
      const us = now() - t0;
      if (got.byteLength !== big.byteLength || got[12345] !== 7) throw new Error('64 MiB message arrived wrong');
      if (i > 0) p.fig.gbps.push(big.byteLength / us / 1000);
    }
  }
  // Cross-process: 64 MiB one way to a peer process that checks lengths ('sink'), 8 B round trips ('echo').
  const cross: Array<{ name: string; bytes: number; gbps?: number; p50_gbps?: number; p50_us?: number; samples: number }> = [];
  for (const k of kinds) {
    const p = await crossProcessPair(k.auth.withJobId(BENCH_JOB_ID));
    const cmd = (o: object) => p.conn.send(new TextEncoder().encode(JSON.stringify(o)));
    const rates: number[] = [];
    for (let i = 0; i < reps; i++) {
      await cmd({ op: 'sink', bytes: big.byteLength, count: 1 });
      const t0 = now();
      await p.conn.send(big);
      const ok = new TextDecoder().decode(await p.conn.recv({ timeoutMs: 60_000 }));
      if (ok !== 'ok') throw new Error(`peer: ${ok}`);
      if (i > 0) rates.push(big.byteLength / (now() - t0) / 1000);
    }
    await cmd({ op: 'echo', bytes: 8, count: 3000 });
    const rts: number[] = [];
    for (let i = 0; i < 3000; i++) {
      const t0 = now();
      await p.conn.send(small);
      await p.conn.recv({ timeoutMs: 10_000 });
      if (i >= 500) rts.push(now() - t0);
    }
    await p.close();
    cross.push({ name: `cross-process net-auth${k.suffix} 8 B round trip`, bytes: 8, p50_us: round(pct(rts, 50)), samples: rts.length });
    cross.push({ name: `cross-process net-auth${k.suffix} 64 MiB one way (best of ${reps - 1})`, bytes: big.byteLength, gbps: Math.round(Math.max(...rates) * 1000) / 1000, p50_gbps: Math.round(pct(rates, 50) * 1000) / 1000, samples: rates.length });
  }
  const steady = [...pairs.flatMap((p, i) => [
    { name: `net-auth${kinds[i]!.suffix} 8 B round trip`, bytes: 8, p50_us: round(pct(p.fig.rt, 50)), samples: p.fig.rt.length },
    { name: `net-auth${kinds[i]!.suffix} 64 MiB one way (best of ${reps - 1})`, bytes: big.byteLength, gbps: Math.round(Math.max(...p.fig.gbps) * 1000) / 1000, p50_gbps: Math.round(pct(p.fig.gbps, 50) * 1000) / 1000, samples: reps - 1 },
  ]), ...cross];
  const ratio = (x: number, y: number) => Math.round((x / y) * 100) / 100;
  const p50 = (name: string) => setup.find((r) => r.name === name)!.p50_us;
  const tls_vs_plain = {
    net_setup_p50: ratio(p50('net-auth-tls'), p50('net-auth')),
    store_setup_p50: ratio(p50('store-auth-tls'), p50('store-auth')),
    rt_8b_p50: ratio(steady[2]!.p50_us!, steady[0]!.p50_us!),
    gbps_64mib_best: ratio(steady[3]!.gbps!, steady[1]!.gbps!),
    cross_rt_8b_p50: ratio(cross[2]!.p50_us!, cross[0]!.p50_us!),
    cross_gbps_64mib_best: ratio(cross[3]!.gbps!, cross[1]!.gbps!),
  };
  for (const p of pairs) await Promise.all([p.a.close(), p.b.close(), p.l.close()]);
  for (const st of stores) await st.close();
  await hs.close();
  const root = new URL('../../', import.meta.url).pathname;
  mkdirSync(`${root}bench/results`, { recursive: true });
  const file = v.out ?? `${root}bench/results/security.json`;
  const out = { suite: 'security', version: 2, started: new Date().toISOString(), host: { cpus: availableParallelism(), node: process.version, loadavg1: loadavg()[0] }, setup, steady, tls_vs_plain };
  writeFileSync(file, JSON.stringify(out, null, 2) + '\n');
  for (const r of setup) console.log(`${r.name.padEnd(15)} set-up p50 ${r.p50_us} us  p99 ${r.p99_us} us  (${r.connections} connections)`);
  for (const r of steady) console.log(`${r.name}: ${'p50_us' in r ? `${r.p50_us} us p50` : `${(r as { gbps: number }).gbps} GB/s best, ${(r as { p50_gbps: number }).p50_gbps} p50`}`);
  console.log(`TLS / plain: ${JSON.stringify(tls_vs_plain)}`);
  console.log(`wrote ${file}`);
}
