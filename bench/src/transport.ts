/**
 * `npm run bench -- transport [--quick] [--repeat N] [--transports net,shm] [--schemes tcp,ipc] [--sizes 1024,65536] [--no-anchor]`
 *
 * Two processes per (transport, scheme): this one listens, a compiled peer (`transport-peer.js`) dials. For each
 * message size (1 KiB, 64 KiB, 1 MiB, 16 MiB, 64 MiB):
 * - verify: one payload each way, checked byte for byte (a wrong byte aborts the run);
 * - one-way throughput: a warm-up round, then `oneway_iters` messages with a bounded window of outstanding
 *   sends; the clock stops when the peer acknowledges the last one. MB/s = 1e6 bytes per second;
 * - round trip: the peer echoes each message (same size both ways); a few warm-up trips, then `rtt_iters` timed
 *   one at a time; p50/p99 in microseconds (nearest rank).
 * The anchor (`bench/anchors/transport_socket.py`: Python blocking sockets, `recv_into` a preallocated buffer,
 * same framing and protocol) runs in the same invocation over tcp and ipc; `*_vs_anchor` are our figure divided by
 * the anchor's (throughput: higher is better; rtt: lower is better).
 *
 * Output `bench/results/transport.json`:
 *   { suite: 'transport', version: 1, started, host: { cpus, node, loadavg1 }, quick, repeats,
 *     rows: [{ transport, url_scheme, bytes, oneway_mbps, rtt_p50_us, rtt_p99_us, iters, oneway_iters, rtt_iters,
 *              verified, repeats, oneway_vs_anchor?, rtt_p50_vs_anchor? }],
 *     skipped: [{ transport, url_scheme, reason }] }
 * With `--repeat N` every transport and the anchor run N interleaved rounds and each figure is the median.
 * `iters` is the number of timed one-way messages (kept for the stable row format); anchor rows have
 * transport 'python-socket'. Each pair is two busy processes: on this 2-core machine that fills it, so other
 * load shows up directly in the figures (loadavg1 is recorded for that reason).
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NetTransport, type Connection, type Transport, type JobAuth } from '@shoal/core';
import { benchAuth } from './bench-auth.js';
import { intOption, parseCommand, type CommandSpec } from '@shoal/run/cli';

/**
 * One transport the benchmark can run. Both processes build it the same way:
 * `(await import(module ?? '@shoal/core'))[factory](factoryArg)`.
 */
export interface BenchTransportEntry {
  factory: string;
  module?: string;
  factoryArg?: unknown;
  /** Schemes to measure, each with a fresh listen URL per run. */
  urls: Record<string, () => string>;
}
/** Transports by name. Pass your own to `runTransportBench`; `defaultBenchTransports` is the usual set. */
export type BenchTransportRegistry = Record<string, BenchTransportEntry>;

/** The registry `npm run bench -- transport` uses. Add a transport with one entry. */
export function defaultBenchTransports(tmp: string): BenchTransportRegistry {
  let seq = 0;
  const sock = (tag: string) => () => `ipc://${join(tmp, `${tag}-${++seq}.sock`)}`;
  return {
    net: { factory: 'createNetTransport', urls: { tcp: () => 'tcp://127.0.0.1:0', ipc: sock('net') } },
    'net-pool': {
      module: import.meta.url,
      factory: 'pooledNetTransport',
      factoryArg: { buffers: 4 },
      urls: { tcp: () => 'tcp://127.0.0.1:0', ipc: sock('netpool') },
    },
    nng: { factory: 'createNngTransport', urls: { tcp: () => 'tcp://127.0.0.1:0', ipc: sock('nng') } },
    shm: { factory: 'shmTransport', factoryArg: { prefix: `bench${process.pid}` }, urls: { shm: () => 'shm://auto' } },
  };
}

/**
 * `net` with recycled receive buffers (`options.allocate`): a ring of `buffers` buffers per message size, handed
 * out in turn. Stands for a caller that reduces a received chunk and then gives its buffer back (a ring
 * allreduce); safe here because the benchmark drops or echoes each message before `buffers` more of its size
 * arrive. Not a general-purpose allocator.
 */
export function pooledNetTransport(arg: { buffers?: number; auth?: JobAuth } = {}): Transport {
  const n = arg.buffers ?? 4;
  const pools = new Map<number, { bufs: Uint8Array[]; next: number }>();
  return new NetTransport({
    auth: arg.auth,
    allocate: (bytes) => {
      let p = pools.get(bytes);
      if (!p) pools.set(bytes, (p = { bufs: [], next: 0 }));
      const i = p.next++ % n;
      return (p.bufs[i] ??= new Uint8Array(bytes));
    },
  });
}

export interface TransportRow {
  transport: string;
  url_scheme: string;
  bytes: number;
  oneway_mbps: number;
  rtt_p50_us: number;
  rtt_p99_us: number;
  iters: number;
  oneway_iters: number;
  rtt_iters: number;
  verified: boolean;
  /** Rounds this row is the median of. */
  repeats?: number;
  oneway_vs_anchor?: number;
  rtt_p50_vs_anchor?: number;
}

export interface TransportBenchOptions {
  sizes?: number[];
  /** Scale iteration counts down (CI smoke runs). */
  quick?: boolean;
  /** Only these transports / schemes. */
  transports?: string[];
  schemes?: string[];
  /** Rounds over every transport; each figure is the median over rounds. Default 1. */
  repeats?: number;
  /** Also run the Python socket anchor. Default true. */
  anchor?: boolean;
  log?: (line: string) => void;
}

const KiB = 1024;
const MiB = 1024 * KiB;
export const BENCH_SIZES = [KiB, 64 * KiB, MiB, 16 * MiB, 64 * MiB];

/** Iterations per size: about 256 MiB one way (at most 200k messages), 32 MiB of round trips (at most 2k). */
export function itersFor(bytes: number, quick: boolean): { oneway: number; rtt: number; warm: number } {
  const q = quick ? 8 : 1;
  const oneway = Math.max(4, Math.min(200_000 / q, Math.ceil((256 * MiB) / bytes / q)));
  const rtt = Math.max(4, Math.min(2_000, Math.ceil((32 * MiB) / bytes / q)));
  return { oneway, rtt, warm: Math.max(2, Math.min(10_000, Math.ceil(oneway / 10))) };
}

/** Deterministic payload; the peer regenerates it to check. Shared with transport-peer.ts. */
export function benchPayload(bytes: number, seed: number): Uint8Array {
  const out = new Uint8Array(bytes);
  const block = Math.min(bytes, 4093); // prime-sized block: a shifted copy does not line up
  for (let i = 0; i < block; i++) out[i] = (i * 151 + seed * 17 + 3) & 0xff;
  for (let off = block; off < bytes; off += block) out.copyWithin(off, 0, Math.min(block, bytes - off));
  if (bytes >= 8) new DataView(out.buffer).setUint32(bytes - 4, bytes ^ seed, true);
  return out;
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

const enc = (o: object) => new TextEncoder().encode(JSON.stringify(o));
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const TIMEOUT = { timeoutMs: 60_000 };

async function expectOk(conn: Connection, what: string): Promise<void> {
  const r = dec(await conn.recv(TIMEOUT));
  if (r !== 'ok') throw new Error(`${what}: peer answered ${r}`);
}

/** Measure one size over an open connection to the peer. */
async function measure(conn: Connection, bytes: number, quick: boolean): Promise<Omit<TransportRow, 'transport' | 'url_scheme'>> {
  const { oneway, rtt, warm } = itersFor(bytes, quick);
  // Verify both directions.
  const mine = benchPayload(bytes, 1);
  await conn.send(enc({ op: 'verify', bytes }), TIMEOUT);
  await conn.send(mine, TIMEOUT);
  await expectOk(conn, `verify ${bytes} B`);
  const theirs = await conn.recv(TIMEOUT);
  if (!sameBytes(theirs, benchPayload(bytes, 2))) throw new Error(`verify ${bytes} B: the payload from the peer is corrupt`);

  const window = Math.max(2, Math.min(64, Math.floor((4 * MiB) / bytes)));
  const sink = async (count: number) => {
    await conn.send(enc({ op: 'sink', bytes, count }), TIMEOUT);
    // Sends complete in order, so the window is a ring of the last `window` send promises: wait for the oldest.
    const ring: Promise<void>[] = new Array(window);
    for (let i = 0; i < count; i++) {
      if (i >= window) await ring[i % window];
      ring[i % window] = conn.send(mine, TIMEOUT);
    }
    await Promise.all(ring.filter(Boolean));
    await expectOk(conn, `sink ${bytes} B`);
  };
  await sink(warm);
  const t0 = performance.now();
  await sink(oneway);
  const secs = (performance.now() - t0) / 1000;

  await conn.send(enc({ op: 'echo', bytes, count: rtt + Math.min(warm, 20) }), TIMEOUT);
  const times: number[] = [];
  for (let i = 0; i < rtt + Math.min(warm, 20); i++) {
    const s = performance.now();
    const [, back] = await Promise.all([conn.send(mine, TIMEOUT), conn.recv(TIMEOUT)]);
    const us = (performance.now() - s) * 1000;
    if (back.byteLength !== bytes) throw new Error(`echo ${bytes} B: got ${back.byteLength} bytes back`);
    if (i >= Math.min(warm, 20)) times.push(us);
  }
  times.sort((a, b) => a - b);
  return {
    bytes,
    oneway_mbps: round((oneway * bytes) / secs / 1e6),
    rtt_p50_us: round(pct(times, 50)),
    rtt_p99_us: round(pct(times, 99)),
    iters: oneway,
    oneway_iters: oneway,
    rtt_iters: rtt,
    verified: true,
  };
}

const round = (x: number) => Math.round(x * 10) / 10;

async function runPair(name: string, entry: BenchTransportEntry, scheme: string, sizes: number[], quick: boolean, log: (s: string) => void): Promise<TransportRow[]> {
  const mod = (await import(entry.module ?? '@shoal/core')) as Record<string, unknown>;
  const make = mod[entry.factory];
  if (typeof make !== 'function') throw new Error(`${entry.module ?? '@shoal/core'} has no export ${entry.factory}`);
  // Both ends authenticate with the benchmark's job secret (the peer reads it from its environment).
  const auth = benchAuth();
  const transport = (await make({ ...((entry.factoryArg as object | undefined) ?? {}), auth })) as Transport;
  const listener = await transport.listen(entry.urls[scheme]!());
  const peerScript = fileURLToPath(new URL('./transport-peer.js', import.meta.url));
  const child = spawn(process.execPath, [peerScript, JSON.stringify({ module: entry.module ?? '@shoal/core', factory: entry.factory, factoryArg: entry.factoryArg, url: listener.url })], {
    stdio: ['ignore', 'inherit', 'inherit'],
    env: { ...process.env, ...auth.childEnv() },
  });
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  const rows: TransportRow[] = [];
  let conn: Connection | undefined;
  try {
    conn = await Promise.race([
      listener.accept({ timeoutMs: 30_000 }),
      exited.then((code) => {
        throw new Error(`peer process exited (${code}) before connecting`);
      }),
    ]);
    for (const bytes of sizes) {
      const r = await measure(conn, bytes, quick);
      const row = { transport: name, url_scheme: scheme, ...r };
      rows.push(row);
      log(`${name.padEnd(8)} ${scheme.padEnd(4)} ${fmtBytes(bytes).padStart(7)}  one-way ${String(row.oneway_mbps).padStart(8)} MB/s  rtt p50 ${String(row.rtt_p50_us).padStart(9)} us  p99 ${String(row.rtt_p99_us).padStart(9)} us`);
    }
    await conn.send(enc({ op: 'exit' }), TIMEOUT);
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5_000))]);
  } finally {
    await conn?.close();
    await listener.close();
    child.kill('SIGKILL');
    await exited;
    await transport.close?.();
  }
  return rows;
}

function fmtBytes(n: number): string {
  return n >= MiB ? `${n / MiB} MiB` : n >= KiB ? `${n / KiB} KiB` : `${n} B`;
}

/** Run the Python anchor; resolves its rows, or undefined (with a logged reason) when python3 is unavailable. */
async function runAnchor(sizes: number[], quick: boolean, tmp: string, log: (s: string) => void): Promise<TransportRow[] | undefined> {
  const script = fileURLToPath(new URL('../anchors/transport_socket.py', import.meta.url));
  const plan = sizes.map((bytes) => ({ bytes, ...itersFor(bytes, quick) }));
  return new Promise((resolve) => {
    const child = spawn('python3', [script, JSON.stringify({ plan, ipc_path: join(tmp, 'anchor.sock') })], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      log(`anchor skipped: ${e.message}`);
      resolve(undefined);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      if (code !== 0) {
        log(`anchor failed (exit ${code})`);
        resolve(undefined);
        return;
      }
      try {
        resolve((JSON.parse(out) as { rows: TransportRow[] }).rows);
      } catch (e) {
        log(`anchor output unreadable: ${(e as Error).message}`);
        resolve(undefined);
      }
    });
  });
}

/** Run the benchmark over `registry`; returns the result document (also what `run` writes). */
export async function runTransportBench(registry: BenchTransportRegistry, tmp: string, opts: TransportBenchOptions = {}) {
  const sizes = opts.sizes ?? BENCH_SIZES;
  const quick = opts.quick ?? false;
  const log = opts.log ?? ((s: string) => console.log(s));
  const started = new Date().toISOString();
  const host = { cpus: cpus().length, node: process.version, loadavg1: round(loadavg()[0]!) };
  const repeats = opts.repeats ?? 1;
  if (!Number.isInteger(repeats) || repeats < 1) throw new RangeError(`repeats must be a positive integer, got ${repeats}`);
  const samples: TransportRow[][] = [];
  const anchorSamples: TransportRow[][] = [];
  const skipped: { transport: string; url_scheme: string; reason: string }[] = [];
  const failed = new Set<string>();
  // Rounds interleave every transport (and the anchor), so load that comes and goes hits them alike.
  for (let round = 1; round <= repeats; round++) {
    if (repeats > 1) log(`-- round ${round} of ${repeats}`);
    const rows: TransportRow[] = [];
    for (const [name, entry] of Object.entries(registry)) {
      if (opts.transports && !opts.transports.includes(name)) continue;
      for (const scheme of Object.keys(entry.urls)) {
        if (opts.schemes && !opts.schemes.includes(scheme)) continue;
        if (failed.has(`${name} ${scheme}`)) continue;
        try {
          rows.push(...(await runPair(name, entry, scheme, sizes, quick, log)));
        } catch (e) {
          const reason = e instanceof Error ? e.message : String(e);
          failed.add(`${name} ${scheme}`);
          skipped.push({ transport: name, url_scheme: scheme, reason });
          log(`${name} ${scheme}: skipped: ${reason}`);
        }
      }
    }
    samples.push(rows);
    if (opts.anchor ?? true) {
      const anchor = await runAnchor(sizes, quick, tmp, log);
      if (anchor) {
        for (const a of anchor) {
          log(`${'anchor'.padEnd(8)} ${a.url_scheme.padEnd(4)} ${fmtBytes(a.bytes).padStart(7)}  one-way ${String(a.oneway_mbps).padStart(8)} MB/s  rtt p50 ${String(a.rtt_p50_us).padStart(9)} us`);
        }
        anchorSamples.push(anchor);
      }
    }
  }
  const rows = medianRows(samples, failed);
  const anchor = anchorSamples.length ? medianRows(anchorSamples, new Set()) : undefined;
  {
    if (anchor) {
      for (const r of rows) {
        // shm has no socket counterpart: compare it with the faster socket anchor (ipc).
        const a = anchor.find((x) => x.bytes === r.bytes && x.url_scheme === (r.url_scheme === 'shm' ? 'ipc' : r.url_scheme));
        if (!a) continue;
        r.oneway_vs_anchor = Math.round((r.oneway_mbps / a.oneway_mbps) * 100) / 100;
        r.rtt_p50_vs_anchor = Math.round((r.rtt_p50_us / a.rtt_p50_us) * 100) / 100;
      }
      rows.push(...anchor);
    }
  }
  return { suite: 'transport', version: 1, started, host, quick, repeats, rows, skipped };
}

/** One row per (transport, scheme, size): the median of each figure over the rounds that measured it. */
function medianRows(rounds: TransportRow[][], failed: Set<string>): TransportRow[] {
  const groups = new Map<string, TransportRow[]>();
  for (const round of rounds) {
    for (const r of round) {
      if (failed.has(`${r.transport} ${r.url_scheme}`)) continue;
      const k = `${r.transport}|${r.url_scheme}|${r.bytes}`;
      let g = groups.get(k);
      if (!g) groups.set(k, (g = []));
      g.push(r);
    }
  }
  const med = (xs: number[]) => {
    const s = [...xs].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m]! : round((s[m - 1]! + s[m]!) / 2);
  };
  return [...groups.values()].map((g) => ({
    ...g[0]!,
    oneway_mbps: med(g.map((r) => r.oneway_mbps)),
    rtt_p50_us: med(g.map((r) => r.rtt_p50_us)),
    rtt_p99_us: med(g.map((r) => r.rtt_p99_us)),
    repeats: g.length,
  }));
}

/** `npm run bench -- transport`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench transport',
  synopsis: '[options]',
  description: 'one-way bandwidth and round-trip latency of every transport and scheme, with an anchor',
  options: {
    quick: { type: 'boolean', help: 'fewer sizes and iterations' },
    repeat: { type: 'string', arg: 'N', help: 'median of N runs (default 1)' },
    'no-anchor': { type: 'boolean', help: 'skip the anchor' },
    transports: { type: 'string', arg: 'LIST', help: 'transports to measure (default all)' },
    schemes: { type: 'string', arg: 'LIST', help: 'URL schemes to measure (default all)' },
    sizes: { type: 'string', arg: 'BYTES,...', help: 'message sizes' },
  },
} as const satisfies CommandSpec;

function parseArgs(args: string[]): TransportBenchOptions {
  const v = parseCommand(command, args).values;
  const o: TransportBenchOptions = {};
  if (v.quick === true) o.quick = true;
  if (v['no-anchor'] === true) o.anchor = false;
  if (v.repeat !== undefined) o.repeats = intOption(command.name, '--repeat', v.repeat, 1);
  if (v.transports !== undefined) o.transports = v.transports.split(',');
  if (v.schemes !== undefined) o.schemes = v.schemes.split(',');
  if (v.sizes !== undefined) o.sizes = v.sizes.split(',').map((x) => intOption(command.name, '--sizes', x, 0));
  return o;
}

export async function run(args: string[]): Promise<void> {
  const opts = parseArgs(args);
  const tmp = mkdtempSync(join(tmpdir(), 'shoal-bench-'));
  try {
    const doc = await runTransportBench(defaultBenchTransports(tmp), tmp, opts);
    const dir = fileURLToPath(new URL('../results/', import.meta.url));
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'transport.json'), JSON.stringify(doc, null, 2) + '\n');
    console.log(`wrote ${join(dir, 'transport.json')} (${doc.rows.length} rows, ${doc.skipped.length} skipped)`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
