// Issue #15: an authenticated but hostile client at a parameter server's doors (TCP, the job's secret) claims huge
// frames: a bare frame header announcing up to 2^31-1 bytes (before and after a hello, alone and with 64 KiB of
// body), and a well-formed request frame announcing an array segment of that size. The server drops each such
// connection at the header with one warning naming the peer and the sizes, reserves nothing for the body (RSS and
// virtual memory of this process, which hosts the server, stay within +64 MiB / +1 GiB), and the job's two
// workers, training meanwhile with 4 MB keys, get exact results.
import type * as net from 'node:net';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { asText, AuthLog, JobAuth, MemoryStore, NetTransport, type Connection } from '@shoal/core';
import { ActorServer, actorKeys, encodeMessage } from '@shoal/core/actor';
import { KVServer, KVWorker } from '@shoal/backends';
import { guard, rng, vmKiB } from './security-helpers.js';

const auth = JobAuth.generate('psb-job', new AuthLog(() => {}));

/** Dial a door of actor `name` as any caller would (authenticated), below the RPC layer. */
async function door(store: MemoryStore, transport: NetTransport, name: string): Promise<Connection> {
  const i = (await store.add(actorKeys.callers(name, 1), 1)) - 1;
  return transport.dial(asText(await store.get(actorKeys.door(name, 1, i), 5_000)), { timeoutMs: 5_000 });
}

/** An SHLF frame header announcing `bytes`, and `tail` bytes of a body. */
const header = (bytes: number, tail = 0) => {
  const h = Buffer.alloc(8 + tail, 0x5a);
  h.writeUInt32LE(0x464c4853, 0);
  h.writeUInt32LE(bytes, 4);
  return h;
};

const sockOf = (c: Connection) => (c as unknown as { sock: net.Socket }).sock;

/** Resolves when `c` is closed by its peer (its next receive fails), or rejects after `ms`. */
const closedByPeer = (c: Connection, ms: number) =>
  new Promise<string>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`the server kept a hostile connection open for ${ms} ms`)), ms);
    c.recv({ timeoutMs: ms + 1000 }).then(
      () => (clearTimeout(t), reject(new Error('the server answered a hostile frame'))),
      (e: Error & { code?: string }) => (clearTimeout(t), resolve(String(e.code))),
    );
  });

test('hostile members claiming huge frames at the ps doors: dropped at the header, memory flat, the job goes on', guard('ps doors', 120_000, async () => {
  const store = new MemoryStore();
  const transport = new NetTransport({ auth });
  const kv = new KVServer({ serverIndex: 0, numServers: 1, numWorkers: 2, mode: 'sync', timeoutMs: 30_000 });
  await kv.onActorStart({ name: 'ps-server-0', epoch: 1, store });
  const server = await ActorServer.start(kv, { name: 'ps-server-0', epoch: 1, store, transport, listenUrl: 'tcp://127.0.0.1:0', mailbox: 'reentrant' });
  const warnings: string[] = [];
  const onWarning = (w: Error) => void warnings.push(w.message);
  process.on('warning', onWarning);
  const workers = await Promise.all([0, 1].map((rank) => KVWorker.connect({ rank, numWorkers: 2, numServers: 1, store, transport, timeoutMs: 30_000, sharedMemory: false })));
  try {
    const n = 1_000_000; // 4 MB: the workers' connections are bounded at 4 MB once declared
    await Promise.all(workers.map((w) => w.init([{ key: 'w', size: n }, { key: 'b', size: 3 }], [new Float32Array(n), new Float32Array(3)])));
    let rounds = 0;
    // Sync rounds: both workers must run the same number, or the one that goes on waits in a round the other never
    // joins (a per-worker `stop` flag read between rounds let rank 1 start round k+1 and rank 0 then stop after k).
    // `end` is fixed once, at the last round either worker started (at least 3); workers never differ by more than one.
    const started = [0, 0];
    let end = Infinity;
    const training = Promise.all(
      workers.map(async (w) => {
        const g = Float32Array.from({ length: n }, (_, i) => (i % 5) + w.rank);
        for (let r = 0; r < end; r++) {
          started[w.rank] = r + 1;
          const [got] = await w.pushPull(['w'], [g]);
          for (const i of [0, 1, 4, n - 1]) if (got![i] !== 2 * (i % 5) + 1) throw new Error(`rank ${w.rank} round ${r}: w[${i}] = ${got![i]}`);
          if (w.rank === 0) rounds++;
        }
      }),
    );
    // the baseline once training is warm (its buffers and the allocator's arenas in place)
    while (rounds < 5) await new Promise((r) => setTimeout(r, 10));
    global.gc?.();
    const rss0 = vmKiB('VmRSS');
    const vm0 = vmKiB('VmSize');
    let rss = rss0;
    let vm = vm0;
    const sample = () => ((rss = Math.max(rss, vmKiB('VmRSS'))), (vm = Math.max(vm, vmKiB('VmSize'))));
    const r = rng(15);
    const huge = () => [2 ** 31 - 1, 2 ** 31 - 1 - Math.floor(r() * 2 ** 20), (1 << 20) + 1 + Math.floor(r() * 2 ** 30)][Math.floor(r() * 3)]!;
    const kinds = ['bare header', 'header after a hello', 'header and 64 KiB of body at once', 'frame announcing a huge array'] as const;
    const claims: { kind: string; bytes: number }[] = [];
    for (let k = 0; k < 40; k++) {
      const kind = kinds[k % kinds.length]!;
      const bytes = huge();
      claims.push({ kind, bytes });
      const c = await door(store, transport, 'ps-server-0');
      if (kind === 'header after a hello') {
        await c.send(encodeMessage({ k: 'q', id: 1, m: 'hello', a: [] }));
        assert.ok((await c.recv({ timeoutMs: 5_000 })).byteLength > 0, 'hello answered');
      }
      const closed = closedByPeer(c, 10_000);
      if (kind === 'bare header' || kind === 'header after a hello') sockOf(c).write(header(bytes, 4096));
      else if (kind === 'header and 64 KiB of body at once') {
        sockOf(c).write(header(bytes, 65_536));
      } else {
        // a valid request frame whose header says an array segment of `bytes` follows
        await c.send(hugeSegmentFrame(bytes));
      }
      await closed;
      sample();
      await c.close();
    }
    end = Math.max(3, ...started);
    await training;
    sample();
    const dRss = (rss - rss0) / 1024;
    const dVm = (vm - vm0) / 1024;
    console.log(`40 hostile connections during ${rounds} rounds of 4 MB: peak RSS +${dRss.toFixed(1)} MiB, virtual +${dVm.toFixed(1)} MiB`);
    assert.ok(dRss < 64, `RSS grew by ${dRss.toFixed(1)} MiB (bound 64 MiB)`);
    assert.ok(dVm < 1024, `virtual memory grew by ${dVm.toFixed(1)} MiB (bound 1 GiB)`);
    const drops = warnings.filter((w) => w.includes('dropping caller'));
    assert.is(drops.length, claims.length, `one warning per hostile connection:\n${warnings.join('\n')}`);
    claims.forEach((cl, i) => {
      assert.match(drops[i]!, /actor ps-server-0: dropping caller 127\.0\.0\.1:\d+ /, `${cl.kind}: names the peer`);
      assert.ok(drops[i]!.includes(`a message of ${cl.bytes} bytes, above the parameter server's control-plane bound`), `${cl.kind}: ${drops[i]}`);
    });
    assert.ok(rounds >= 3, `the job went on: ${rounds} rounds`);
  } finally {
    process.off('warning', onWarning);
    await Promise.all(workers.map((w) => w.close()));
    await server.stop();
    await kv.onActorStop();
  }
}));

/**
 * A well-formed actor request frame (codec.ts: 'SHA2' preamble, JSON header, padding) calling `stats` with one
 * array argument sent as an external segment of `bytes` bytes, which never comes.
 */
function hugeSegmentFrame(bytes: number): Uint8Array {
  const json = Buffer.from(JSON.stringify({ v: { k: 'q', id: 1, m: 'stats', a: [{ '\u0000x': 0, t: 'Uint8Array' }] }, s: [], x: [bytes] }));
  const out = Buffer.alloc((16 + json.length + 7) & ~7);
  out.writeUInt32LE(0x32414853, 0);
  out.writeUInt32LE(json.length, 4);
  out.writeUInt32LE(1, 8);
  json.copy(out, 16);
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

test.run();
