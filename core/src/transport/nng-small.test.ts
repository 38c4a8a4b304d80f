// The nng addon's small-message path over tcp (core/native/nng/src/jsrx.cc): lone small frames written inline
// from the JS thread, headers and small frames read on the JS thread, large payloads handed to nng's threads
// (body mode) and back, backpressure and teardown in that mode. ipc keeps nng's own reads and writes.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { assertBytes, guard, openPair, patternBytes } from './conformance.js';
import { JobAuth } from '../security/job-auth.js';
import { loadNngAddon, type NativePair } from './nng-addon.js';
import { createNngTransport } from './nng.js';

const auth = JobAuth.generate('nng-small-test');
const MiB = 1 << 20;
const dir = mkdtempSync(join(tmpdir(), 'shoal-nng-s-'));
test.after(() => rmSync(dir, { recursive: true, force: true }));

interface RawEnd {
  pair: NativePair;
  sendDone: number[];
  got: number[];
  closed: Promise<void>;
}

/** Two raw addon ends over `scheme`, connected; messages' lengths and EV_SEND ids are recorded. */
async function rawPair(scheme: 'tcp' | 'ipc'): Promise<{ a: RawEnd; b: RawEnd; waitGot: (n: number) => Promise<void> }> {
  const addon = loadNngAddon();
  const K = addon.constants;
  let ups = 0;
  let upDone!: () => void;
  const up = new Promise<void>((r) => (upDone = r));
  let want = 0;
  let gotDone: (() => void) | undefined;
  const make = (): RawEnd => {
    let closedDone!: () => void;
    const end: RawEnd = { pair: undefined as unknown as NativePair, sendDone: [], got: [], closed: new Promise<void>((r) => (closedDone = r)) };
    end.pair = new addon.NngPair((kind, id, _rv, data, lens) => {
      if (kind === K.EV_CONNECTED && ++ups === 2) upDone();
      if (kind === K.EV_SEND) end.sendDone.push(id);
      if (kind === K.EV_MSGS) end.got.push(...lens!);
      if (kind === K.EV_MSG) end.got.push(data!.byteLength);
      if (kind === K.EV_CLOSED) closedDone();
      if (gotDone && end.got.length >= want) gotDone();
    }, 64 * MiB);
    end.pair.ref();
    return end;
  };
  const a = make();
  const b = make();
  const url = scheme === 'tcp' ? 'tcp://127.0.0.1:0' : `ipc://${dir}/raw${Date.now()}.sock`;
  const port = b.pair.listen(url);
  a.pair.dial(scheme === 'tcp' ? `tcp://127.0.0.1:${port}` : url);
  await up;
  const waitGot = (n: number) =>
    new Promise<void>((r) => {
      want = n;
      gotDone = r;
      if (b.got.length >= n) r();
    });
  return { a, b, waitGot };
}

test('tcp: a lone small send is written inline (no EV_SEND), a large one goes through nng (EV_SEND)', async () => {
  await guard('inline sends', 10_000, async () => {
    const { a, b, waitGot } = await rawPair('tcp');
    try {
      assert.is(a.pair.send(1, new Uint8Array(8), true), true, '8 B lone send written inline');
      assert.is(a.pair.send(2, new Uint8Array(16 * 1024), true), true, '16 KiB lone send written inline');
      // The receiver stops reading, so the 32 MiB write cannot finish (socket buffers hold a few MiB).
      b.pair.setRxPaused(true);
      assert.is(a.pair.send(3, patternBytes(32 * MiB, 3), true), false, 'a 32 MiB send goes through nng');
      // Queued behind a write in flight: never inline (it would interleave with nng's write).
      assert.is(a.pair.send(4, new Uint8Array(8), true), false, 'a small send behind a write in flight is queued');
      await new Promise((r) => setTimeout(r, 20));
      b.pair.setRxPaused(false);
      await waitGot(4);
      assert.equal(b.got, [8, 16 * 1024, 32 * MiB, 8]);
      for (let i = 0; i < 50 && a.sendDone.at(-1) !== 4; i++) await new Promise((r) => setTimeout(r, 10));
      assert.is(a.sendDone.at(-1), 4, 'EV_SEND covers the queued sends');
      assert.ok(a.sendDone.every((id) => id >= 3), `no EV_SEND for the inline sends: ${a.sendDone}`);
    } finally {
      a.pair.close();
      b.pair.close();
      await Promise.all([a.closed, b.closed]);
    }
  })();
});

test('ipc: sends keep going through nng (EV_SEND for each write)', async () => {
  await guard('ipc sends', 10_000, async () => {
    const { a, b, waitGot } = await rawPair('ipc');
    try {
      assert.is(a.pair.send(1, new Uint8Array(8), true), false);
      await waitGot(1);
      for (let i = 0; i < 50 && a.sendDone.length === 0; i++) await new Promise((r) => setTimeout(r, 10));
      assert.equal(a.sendDone, [1]);
    } finally {
      a.pair.close();
      b.pair.close();
      await Promise.all([a.closed, b.closed]);
    }
  })();
});

test('tcp: small and large messages alternate both ways (JS-thread reads <-> body mode), intact and in order', async () => {
  await guard('alternating sizes', 30_000, async () => {
    const p = await openPair({ transport: createNngTransport({ auth }), listenUrl: () => 'tcp://127.0.0.1:0' });
    try {
      // Sizes around the 64 KiB body threshold and the 256 KiB receive buffer, several per tick and one per tick.
      const sizes = [8, 64 * 1024, 64 * 1024 + 1, 0, 300 * 1024, 1, 3 * MiB + 5, 1000, 256 * 1024, 8];
      const M = 200;
      const run = async (from: typeof p.a, to: typeof p.b, seed: number) => {
        const sends: Promise<void>[] = [];
        const recvs = (async () => {
          for (let i = 0; i < M; i++) assertBytes(await to.recv({ timeoutMs: 10_000 }), patternBytes(sizes[i % sizes.length]!, seed + i), `message ${i}`);
        })();
        for (let i = 0; i < M; i++) {
          sends.push(from.send(patternBytes(sizes[i % sizes.length]!, seed + i)));
          if (i % 3 === 0) await sends[sends.length - 1]; // lone sends (inline) between bursts
        }
        await Promise.all([...sends, recvs]);
      };
      await Promise.all([run(p.a, p.b, 0), run(p.b, p.a, 10_000)]);
      // Ping-pong of 8 B after all that: the reads came back to the JS thread.
      for (let i = 0; i < 100; i++) {
        await p.a.send(patternBytes(8, i));
        assertBytes(await p.b.recv({ timeoutMs: 5000 }), patternBytes(8, i), `ping ${i}`);
        await p.b.send(patternBytes(8, -i));
        assertBytes(await p.a.recv({ timeoutMs: 5000 }), patternBytes(8, -i), `pong ${i}`);
      }
    } finally {
      await p.close();
    }
  })();
});

test('tcp: backpressure with small messages read on the JS thread: the reader stops, resumes, loses nothing', async () => {
  await guard('small backpressure', 30_000, async () => {
    const t = createNngTransport({ auth, recvHighWaterBytes: 64 * 1024 });
    const p = await openPair({ transport: t, listenUrl: () => 'tcp://127.0.0.1:0' });
    try {
      const N = 20_000;
      let sent = 0;
      const sends = Array.from({ length: N }, (_, i) => p.a.send(patternBytes(1024, i), { timeoutMs: 20_000 }).then(() => void sent++));
      await new Promise((r) => setTimeout(r, 500));
      assert.ok(sent < N, `all ${N} KiB were sent while nobody received (no backpressure)`);
      for (let i = 0; i < N; i++) assertBytes(await p.b.recv({ timeoutMs: 10_000 }), patternBytes(1024, i), `message ${i}`);
      await Promise.all(sends);
      assert.is(sent, N);
    } finally {
      await p.close();
    }
  })();
});

test('tcp: the peer closing while the JS thread polls fails the pending recv ERR_PEER_CLOSED', async () => {
  await guard('peer close', 10_000, async () => {
    const p = await openPair({ transport: createNngTransport({ auth }), listenUrl: () => 'tcp://127.0.0.1:0' });
    try {
      await p.a.send(new Uint8Array(8));
      await p.b.recv({ timeoutMs: 5000 });
      const pending = p.b.recv({ timeoutMs: 5000 }).then(
        () => undefined,
        (e: unknown) => e as { code?: string },
      );
      await p.a.close();
      const err = await pending;
      assert.is(err?.code, 'ERR_PEER_CLOSED');
    } finally {
      await p.close();
    }
  })();
});

test('a worker thread exiting with a connected tcp pair (its socket polled) does not crash the process', () => {
  const mod = new URL('./nng.js', import.meta.url).href;
  const code = `
    import { Worker } from 'node:worker_threads';
    const w = new Worker(\`
      import(${JSON.stringify(mod)}).then(async ({ createNngTransport }) => {
        const t = createNngTransport();
        const l = await t.listen('tcp://127.0.0.1:0');
        const [a, b] = await Promise.all([l.accept({ timeoutMs: 5000 }), t.dial(l.url, { timeoutMs: 5000 })]);
        await a.send(new Uint8Array(8));
        await b.recv({ timeoutMs: 5000 });
        void b.recv({ timeoutMs: 60000 }).catch(() => {}); // left waiting: the poll is active at exit
        process.exit(0);
      });
    \`, { eval: true });
    w.on('exit', (c) => setTimeout(() => { console.log('worker exited ' + c); }, 300));
  `;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], { encoding: 'utf8', timeout: 20_000 });
  assert.is(r.status, 0, `child exited ${r.status} ${r.signal}: ${r.stderr}`);
  assert.match(r.stdout, /worker exited 0/);
});

test.run();
