// Over 500 lines: a test suite, not runtime code; every case of the Transport contract stays in one list.
/**
 * The transport conformance suite (libp2p's compliance-tests habit): one set of uvu cases that every
 * `Transport` implementation (memory, net, nng, shm) must pass. A transport's test file calls
 *
 * ```ts
 * transportConformance('net tcp', async () => ({
 *   transport: new NetTransport(),
 *   listenUrl: () => 'tcp://127.0.0.1:0',
 *   peer: { module: new URL('./net.js', import.meta.url).href, factory: 'createNetTransport' },
 * })).run();
 * ```
 *
 * and adds its own transport-specific cases (bad frames are wire-format specific) on a separate suite.
 *
 * Not exported from the package index: it imports uvu, a dev dependency. Import it by relative path from tests.
 *
 * Every case is bounded by a guard timer, so a transport that hangs fails the case instead of the test file.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { isShoalError, type ShoalErrorCode } from '../errors.js';
import type { TransportFactoryRef } from './factory.js';
import type { Connection, Listener, Transport } from './transport.js';

/** How a child process constructs the same transport (see `transportFromRef`). */
export type PeerFactory = TransportFactoryRef;

export interface ConformanceEnv {
  transport: Transport;
  /** A fresh URL to listen on for each pair, e.g. `tcp://127.0.0.1:0`, `ipc:///tmp/x-3.sock`, `mem://`. */
  listenUrl(): string;
  /** Lets the suite run a peer in a child process (killed-peer case). Omit for in-process-only transports. */
  peer?: PeerFactory;
  /** Largest size case to run (default 64 MiB + 4 B); lower it only for a transport with a documented limit. */
  maxMessageBytes?: number;
  /** Called once after the suite. The suite also calls `transport.close?.()`. */
  teardown?(): Promise<void>;
}

interface Ctx {
  env?: ConformanceEnv;
}

const MiB = 1 << 20;
/** The message sizes every transport must carry intact, in both directions. */
export const CONFORMANCE_SIZES = [0, 1, 7, 1000, MiB, 16 * MiB, 64 * MiB + 4] as const;

/** Bytes whose content depends on both the index and a seed, so shifted, truncated or stale data is caught. */
export function patternBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  // Fill one 4 KiB block, then copy it block by block: fast for 64 MiB, still position-dependent within a block
  // and seed-dependent across messages. The first 8 bytes of every 4 KiB block also carry the block index.
  const block = Math.min(n, 4096);
  for (let i = 0; i < block; i++) out[i] = (i * 131 + seed * 7 + (i >>> 8)) & 0xff;
  for (let off = block; off < n; off += block) out.copyWithin(off, 0, Math.min(block, n - off));
  const view = new DataView(out.buffer);
  for (let off = 0; off + 8 <= n; off += 4096) {
    view.setUint32(off, off / 4096, true);
    view.setUint32(off + 4, seed, true);
  }
  return out;
}

/** Exact byte equality with a readable first-difference message. */
export function assertBytes(actual: Uint8Array, expected: Uint8Array, what: string): void {
  if (actual.byteLength !== expected.byteLength) {
    assert.unreachable(`${what}: length ${actual.byteLength}, expected ${expected.byteLength}`);
  }
  const a = Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength);
  const e = Buffer.from(expected.buffer, expected.byteOffset, expected.byteLength);
  if (a.equals(e)) return;
  let i = 0;
  while (i < a.length && a[i] === e[i]) i++;
  assert.unreachable(`${what}: first difference at byte ${i} (got ${a[i]}, expected ${e[i]})`);
}

/** Await `p` and assert it rejects with a ShoalError of `code`; returns the error. */
/**
 * A `recvInto(dst)` of `rx` given `timeoutMs` while `big` is sent by `tx`: if it times out while the body streams
 * in, the caller may reuse `dst` at once (here: fills it) and the message still arrives whole, in a buffer of the
 * transport's; if it was too fast to time out, the message is whole.
 */
export async function checkRecvIntoTimeout(tx: Connection, rx: Connection, big: Uint8Array, timeoutMs: number): Promise<void> {
  const dst = new Uint8Array(big.byteLength);
  const sent = tx.send(big, { timeoutMs: 15_000 });
  const first = await rx.recvInto!(dst, { timeoutMs }).then(
    (m) => m,
    (e: { code?: string }) => {
      assert.is(e.code, 'ERR_TIMEOUT');
      return undefined;
    },
  );
  if (first) {
    assertBytes(first, big, 'too fast to test the cancel; still whole');
  } else {
    dst.fill(0xee); // the caller reuses its buffer after the timeout
    const got = await rx.recv({ timeoutMs: 15_000 });
    assert.ok(got !== dst, 'the message did not land in the buffer given back');
    assertBytes(got, big, 'the message arrives whole, in a buffer of its own');
  }
  await sent;
}

export async function expectCode(p: Promise<unknown>, code: ShoalErrorCode, what: string): Promise<Error> {
  try {
    await p;
  } catch (e) {
    if (!isShoalError(e, code)) {
      assert.unreachable(`${what}: expected ${code}, got ${e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e)}`);
    }
    return e as Error;
  }
  assert.unreachable(`${what}: expected ${code}, but it resolved`);
  throw new Error('unreachable');
}

/**
 * Mark `p` as handled now (so a rejection that happens while the test awaits something else is not reported as
 * unhandled) and return it unchanged for a later `await`.
 */
export function later<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

/** Fail (instead of hanging) if `fn` takes longer than `ms`. */
export function guard(what: string, ms: number, fn: () => Promise<void>): () => Promise<void> {
  return async () => {
    let timer: NodeJS.Timeout | undefined;
    const limit = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: did not settle within ${ms} ms (hang)`)), ms);
    });
    try {
      await Promise.race([fn(), limit]);
    } finally {
      clearTimeout(timer);
    }
  };
}

/** A connected pair: `a` accepted by the listener, `b` dialed. */
export interface Pair {
  a: Connection;
  b: Connection;
  listener: Listener;
  close(): Promise<void>;
}

export async function openPair(env: ConformanceEnv, timeoutMs = 10_000): Promise<Pair> {
  const listener = await env.transport.listen(env.listenUrl(), { timeoutMs });
  const [a, b] = await Promise.all([listener.accept({ timeoutMs }), env.transport.dial(listener.url, { timeoutMs })]);
  return {
    a,
    b,
    listener,
    close: async () => {
      await Promise.allSettled([a.close(), b.close(), listener.close()]);
    },
  };
}

/**
 * Run a peer in a child process: it builds the transport from `peer`, dials `url`, sends one message `ready`,
 * then echoes every message it receives until the connection ends. The caller kills it and awaits its exit.
 */
export function spawnPeer(peer: PeerFactory, url: string): ChildProcess {
  const script = fileURLToPath(new URL('./conformance-peer.js', import.meta.url));
  // The job secret goes in the environment (JSON.stringify keeps only `auth`'s job id).
  const env = { ...process.env, ...(peer.auth?.childEnv() ?? {}) };
  const child = spawn(process.execPath, [script, JSON.stringify({ ...peer, url })], { stdio: ['ignore', 'inherit', 'inherit'], env });
  return child;
}

const text = (s: string) => new TextEncoder().encode(s);
const untext = (b: Uint8Array) => new TextDecoder().decode(b);

/** Register the conformance cases on a new uvu suite named `name`. Call `.run()` on the result. */
export function transportConformance(name: string, setup: () => Promise<ConformanceEnv>) {
  const s = suite<Ctx>(`transport conformance: ${name}`, {});
  s.before(async (ctx) => {
    ctx.env = await setup();
  });
  s.after(async (ctx) => {
    await ctx.env?.transport.close?.();
    await ctx.env?.teardown?.();
  });
  const envOf = (ctx: Ctx) => {
    if (!ctx.env) throw new Error('conformance setup did not run');
    return ctx.env;
  };

  s('messages of 0 B to 64 MiB + 4 B arrive whole and intact in both directions', async (ctx) => {
    const env = envOf(ctx);
    const max = env.maxMessageBytes ?? Infinity;
    await guard('sizes', 60_000, async () => {
      const p = await openPair(env);
      try {
        for (const n of CONFORMANCE_SIZES) {
          if (n > max) continue;
          const ab = patternBytes(n, n % 251);
          const [, gotB] = await Promise.all([p.a.send(ab), p.b.recv()]);
          assertBytes(gotB, ab, `a->b ${n} B`);
          const ba = patternBytes(n, (n + 1) % 251);
          const [, gotA] = await Promise.all([p.b.send(ba), p.a.recv()]);
          assertBytes(gotA, ba, `b->a ${n} B`);
        }
      } finally {
        await p.close();
      }
    })();
  });

  s('500 outstanding sends in each direction arrive in order', async (ctx) => {
    await guard('ordering', 30_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        const N = 500;
        const msg = (i: number, seed: number) => patternBytes((i * 37) % 3000, i + seed);
        const sendsA = Array.from({ length: N }, (_, i) => later(p.a.send(msg(i, 0))));
        const sendsB = Array.from({ length: N }, (_, i) => later(p.b.send(msg(i, 1000))));
        const recvB = (async () => {
          for (let i = 0; i < N; i++) assertBytes(await p.b.recv(), msg(i, 0), `a->b message ${i}`);
        })();
        const recvA = (async () => {
          for (let i = 0; i < N; i++) assertBytes(await p.a.recv(), msg(i, 1000), `b->a message ${i}`);
        })();
        await Promise.all([...sendsA, ...sendsB, recvA, recvB]);
      } finally {
        await p.close();
      }
    })();
  });

  s('six pairs open at once carry their own messages only (no cross-talk)', async (ctx) => {
    await guard('many pairs', 30_000, async () => {
      const env = envOf(ctx);
      const pairs = await Promise.all(Array.from({ length: 6 }, () => openPair(env)));
      try {
        await Promise.all(
          pairs.map(async (p, k) => {
            const sizes = [0, 33, 4096, 70_000, 1 << 20];
            const fromA = sizes.map((n, i) => patternBytes(n, 100 * k + i));
            const fromB = sizes.map((n, i) => patternBytes(n, 100 * k + 50 + i));
            await Promise.all([
              ...fromA.map((m) => p.a.send(m)),
              ...fromB.map((m) => p.b.send(m)),
              (async () => {
                for (let i = 0; i < sizes.length; i++) assertBytes(await p.b.recv(), fromA[i]!, `pair ${k} a->b message ${i}`);
              })(),
              (async () => {
                for (let i = 0; i < sizes.length; i++) assertBytes(await p.a.recv(), fromB[i]!, `pair ${k} b->a message ${i}`);
              })(),
            ]);
          }),
        );
      } finally {
        await Promise.all(pairs.map((p) => p.close()));
      }
    })();
  });

  s('several outstanding recvs complete in order', async (ctx) => {
    await guard('outstanding recvs', 20_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        const recvs = Array.from({ length: 10 }, () => later(p.b.recv({ timeoutMs: 10_000 })));
        for (let i = 0; i < 10; i++) await p.a.send(text(`m${i}`));
        const got = (await Promise.all(recvs)).map(untext);
        assert.equal(got, Array.from({ length: 10 }, (_, i) => `m${i}`));
      } finally {
        await p.close();
      }
    })();
  });

  s('a send resolved is safe to reuse: overwriting the buffer does not change what the peer gets', async (ctx) => {
    await guard('buffer reuse', 20_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        for (const n of [64, 256 * 1024, 4 * MiB]) {
          const buf = new Uint8Array(n);
          const got: Promise<Uint8Array>[] = [];
          for (let i = 0; i < 20; i++) {
            buf.set(patternBytes(n, i));
            got.push(later(p.b.recv()));
            await p.a.send(buf);
            buf.fill(0xee); // the transport said it no longer needs buf
          }
          const msgs = await Promise.all(got);
          for (let i = 0; i < 20; i++) assertBytes(msgs[i]!, patternBytes(n, i), `${n} B message ${i}`);
          // The received bytes belong to the caller: writing into one must not alter another.
          msgs[0]!.fill(1);
          assertBytes(msgs[1]!, patternBytes(n, 1), `${n} B message 1 after writing into message 0`);
        }
      } finally {
        await p.close();
      }
    })();
  });

  s('a recv that times out rejects ERR_TIMEOUT and consumes nothing', async (ctx) => {
    await guard('recv timeout', 20_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        const t0 = Date.now();
        await expectCode(p.b.recv({ timeoutMs: 100 }), 'ERR_TIMEOUT', 'recv with nothing sent');
        assert.ok(Date.now() - t0 >= 90, 'timed out too early');
        assert.ok(Date.now() - t0 < 5_000, 'timed out far too late');
        await p.a.send(text('after-timeout'));
        assert.is(untext(await p.b.recv({ timeoutMs: 5_000 })), 'after-timeout');
        // A timed-out recv queued behind a live one must not steal the next message either.
        const first = later(p.b.recv({ timeoutMs: 5_000 }));
        await expectCode(p.b.recv({ timeoutMs: 50 }), 'ERR_TIMEOUT', 'second queued recv');
        await p.a.send(text('one'));
        await p.a.send(text('two'));
        assert.is(untext(await first), 'one');
        assert.is(untext(await p.b.recv({ timeoutMs: 5_000 })), 'two');
      } finally {
        await p.close();
      }
    })();
  });

  s('an AbortSignal rejects a pending recv with ERR_ABORTED and consumes nothing', async (ctx) => {
    await guard('abort', 20_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        const ac = new AbortController();
        const pending = later(p.b.recv({ signal: ac.signal, timeoutMs: 10_000 }));
        setTimeout(() => ac.abort(new Error('test abort')), 20);
        await expectCode(pending, 'ERR_ABORTED', 'recv aborted while pending');
        await expectCode(p.b.recv({ signal: ac.signal }), 'ERR_ABORTED', 'recv with an already-aborted signal');
        await p.a.send(text('after-abort'));
        assert.is(untext(await p.b.recv({ timeoutMs: 5_000 })), 'after-abort');
        await expectCode(p.a.send(text('x'), { signal: ac.signal }), 'ERR_ABORTED', 'send with an already-aborted signal');
      } finally {
        await p.close();
      }
    })();
  });

  s('a peer that closes: pending and later recvs reject ERR_PEER_CLOSED, then sends too', async (ctx) => {
    await guard('peer close', 20_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        const r1 = later(p.b.recv({ timeoutMs: 10_000 }));
        const r2 = later(p.b.recv({ timeoutMs: 10_000 }));
        await p.a.close();
        await expectCode(r1, 'ERR_PEER_CLOSED', 'first pending recv');
        await expectCode(r2, 'ERR_PEER_CLOSED', 'second pending recv');
        await expectCode(p.b.recv({ timeoutMs: 10_000 }), 'ERR_PEER_CLOSED', 'recv after the peer closed');
        await expectCode(p.b.send(text('x'), { timeoutMs: 10_000 }), 'ERR_PEER_CLOSED', 'send after the peer closed');
      } finally {
        await p.close();
      }
    })();
  });

  s('closing an end: its pending ops reject ERR_CLOSED, later ops too, close is idempotent', async (ctx) => {
    await guard('own close', 20_000, async () => {
      const p = await openPair(envOf(ctx));
      try {
        const r = later(p.a.recv({ timeoutMs: 10_000 }));
        await p.a.close();
        await expectCode(r, 'ERR_CLOSED', 'pending recv on the closed end');
        assert.ok(p.a.closed);
        await expectCode(p.a.recv(), 'ERR_CLOSED', 'recv after close');
        await expectCode(p.a.send(text('x')), 'ERR_CLOSED', 'send after close');
        await p.a.close();
      } finally {
        await p.close();
      }
    })();
  });

  s('a listener pairs with exactly one dialer; accept times out and rejects ERR_CLOSED after close', async (ctx) => {
    const env = envOf(ctx);
    await guard('listener', 20_000, async () => {
      const p = await openPair(env);
      try {
        const second = env.transport.dial(p.listener.url, { timeoutMs: 300 });
        await second.then(
          async (c) => {
            await c.close();
            assert.unreachable('a second dialer must not get a connection to a pair listener');
          },
          (e) => assert.ok(isShoalError(e), `second dial should fail with a ShoalError, got ${String(e)}`),
        );
        // The first pair still works.
        await p.a.send(text('still'));
        assert.is(untext(await p.b.recv({ timeoutMs: 5_000 })), 'still');
      } finally {
        await p.close();
      }
      const l = await env.transport.listen(env.listenUrl());
      try {
        await expectCode(l.accept({ timeoutMs: 50 }), 'ERR_TIMEOUT', 'accept with no dialer');
        const pending = later(l.accept({ timeoutMs: 10_000 }));
        await l.close();
        await expectCode(pending, 'ERR_CLOSED', 'accept pending while the listener closes');
      } finally {
        await l.close();
      }
    })();
  });

  s('dial with nobody listening rejects ERR_TIMEOUT within its timeout; dial retries until a listener appears', async (ctx) => {
    const env = envOf(ctx);
    await guard('dial', 20_000, async () => {
      // Learn a concrete address, then stop listening on it.
      const probe = await env.transport.listen(env.listenUrl());
      const url = probe.url;
      await probe.close();
      const t0 = Date.now();
      await expectCode(env.transport.dial(url, { timeoutMs: 300 }), 'ERR_TIMEOUT', `dial ${url} with nobody listening`);
      const took = Date.now() - t0;
      assert.ok(took >= 250 && took < 2_000, `dial gave up after ${took} ms for a 300 ms timeout`);
      const ac = new AbortController();
      setTimeout(() => ac.abort(), 50);
      await expectCode(env.transport.dial(url, { timeoutMs: 10_000, signal: ac.signal }), 'ERR_ABORTED', 'aborted dial');

      // Dial first, listen 200 ms later on the same address.
      const dialing = later(env.transport.dial(url, { timeoutMs: 10_000 }));
      await new Promise((r) => setTimeout(r, 200));
      const l = await env.transport.listen(url);
      try {
        const [a, b] = await Promise.all([l.accept({ timeoutMs: 10_000 }), dialing]);
        await b.send(text('late listener'));
        assert.is(untext(await a.recv({ timeoutMs: 5_000 })), 'late listener');
        await Promise.all([a.close(), b.close()]);
      } finally {
        await l.close();
      }
    })();
  });

  s('closing either end during a 64 MiB transfer settles both sides (no hang)', async (ctx) => {
    const env = envOf(ctx);
    const n = Math.min(64 * MiB, env.maxMessageBytes ?? Infinity);
    const big = patternBytes(n, 3);
    await guard('close mid-transfer', 40_000, async () => {
      for (const closer of ['sender', 'receiver'] as const) {
        for (const delayMs of [0, 5]) {
          const p = await openPair(env);
          try {
            const sending = later(p.a.send(big, { timeoutMs: 15_000 }));
            const receiving = later(p.b.recv({ timeoutMs: 15_000 }));
            if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
            else await Promise.resolve();
            await (closer === 'sender' ? p.a : p.b).close();
            const [sent, got] = await Promise.allSettled([sending, receiving]);
            for (const r of [sent, got]) {
              if (r.status === 'rejected') {
                assert.ok(isShoalError(r.reason), `${closer} close: expected a ShoalError, got ${String(r.reason)}`);
                assert.ok((r.reason as { code: string }).code !== 'ERR_TIMEOUT', `${closer} close after ${delayMs} ms: an operation hung until its timeout`);
              }
            }
            if (got.status === 'fulfilled') assertBytes(got.value, big, 'message that made it before close');
          } finally {
            await p.close();
          }
        }
      }
    })();
  });

  s('a peer process killed with SIGKILL: pending recv (and a 64 MiB send) settle with ERR_PEER_CLOSED (no hang)', async (ctx) => {
    const env = envOf(ctx);
    if (!env.peer) return; // in-process-only transport (memory)
    await guard('killed peer', 30_000, async () => {
      const l = await env.transport.listen(env.listenUrl());
      const child = spawnPeer(env.peer!, l.url);
      const exited = new Promise<void>((r) => child.once('exit', () => r()));
      try {
        const a = await l.accept({ timeoutMs: 15_000 });
        assert.is(untext(await a.recv({ timeoutMs: 15_000 })), 'ready');
        const big = patternBytes(MiB + 3, 9);
        await a.send(big);
        assertBytes(await a.recv({ timeoutMs: 15_000 }), big, 'echo from the child peer');
        const pending = a.recv({ timeoutMs: 15_000 });
        // A 64 MiB send in flight when the peer dies must settle too: sent (buffered) or ERR_PEER_CLOSED.
        const sending = later(a.send(patternBytes(Math.min(64 * MiB, env.maxMessageBytes ?? Infinity), 4), { timeoutMs: 15_000 }));
        await new Promise((r) => setTimeout(r, 5));
        child.kill('SIGKILL');
        await expectCode(pending, 'ERR_PEER_CLOSED', 'recv pending while the peer process is killed');
        await sending.then(
          () => {},
          (e) => assert.ok(isShoalError(e, 'ERR_PEER_CLOSED'), `64 MiB send while the peer is killed: expected success or ERR_PEER_CLOSED, got ${String(e)}`),
        );
        await expectCode(a.recv({ timeoutMs: 15_000 }), 'ERR_PEER_CLOSED', 'recv after the peer process died');
        await a.close();
      } finally {
        child.kill('SIGKILL');
        await exited;
        await l.close();
      }
    })();
  });

  return s;
}
