import { type RpcStats } from '@shoal/core/actor';
import { Errors, isShoalError, ShoalError, type ActorClient, type FloatArray, type ShoalErrorCode } from '@shoal/core';
import type { KeySpec } from '../key-layout.js';
import type { KVServer } from '../kv-server.js';
import type { PsMethod, PsReplies, PsRequests, ServerHello } from '../protocol.js';
import { DECLARE_BATCH_BYTES } from '../server/caller-bounds.js';

/** Codes a server error keeps when it reaches the worker (so ERR_MISMATCH stays ERR_MISMATCH). */
const PASS_THROUGH: ReadonlySet<string> = new Set(['ERR_MISMATCH', 'ERR_TIMEOUT', 'ERR_NAN', 'ERR_STATE', 'ERR_CLOSED', 'ERR_PEER_CLOSED']);

/** A request to send again, whole, after a server restart (the new incarnation has not mapped the staging buffers). */
export interface Resend<M extends PsMethod> {
  args: PsRequests[M];
  replyInto?: readonly FloatArray[];
}

/**
 * A worker's links to the server shards (ps-lite's `Customer` + resender): typed requests of `protocol.ts`, and
 * what happens when a server is lost.
 * - Default (fail fast): when any server is lost, every call in flight to any server fails with that error, so a
 *   worker blocked on a healthy server (waiting for a round the lost server's death stalled) does not sit out the
 *   timeout; later calls fail with it too.
 * - `resendAfterRestart`: wait for the server's next incarnation (a supervisor restarting it from its checkpoint),
 *   say hello again (`restart.restored`: map the staging regions again) and resend the calls that failed; pushes
 *   carry counters, so none is applied twice.
 *
 * Bounds (issue #15): a server bounds each connection's messages by the keys it declared (`declare`), so before
 * values of a key go out the worker declares it to every server, and again on every new connection after a
 * restart. Each client checks its messages against the bound its server acknowledged (`limitOutgoing`): a message
 * above it is a clear error here rather than a dropped connection there.
 */
export class ServerLinks {
  private broken: Error | undefined;
  private readonly inflight = new Set<(e: Error) => void>();
  private readonly reconnecting = new Map<number, Promise<void>>();
  /** Requests whose values went through the staging buffers. */
  sharedCalls = 0;
  /** Keys declared to the servers (see `declare`), in declaration order. */
  private readonly declared = new Map<string, KeySpec>();

  constructor(
    readonly clients: readonly ActorClient<KVServer>[],
    private readonly rank: number,
    private readonly resendAfterRestart: boolean,
    private readonly restart: { dropped(s: number): void; restored(s: number): Promise<void> },
  ) {
    if (!resendAfterRestart) {
      clients.forEach((c) =>
        c.onDisconnect((err) => {
          if (this.broken) return;
          this.broken = err;
          for (const f of this.inflight) f(err);
          this.inflight.clear();
        }),
      );
    }
  }

  get size(): number {
    return this.clients.length;
  }

  /** Whether failed calls are sent again to a restarted server (`resendAfterRestart`). */
  get resends(): boolean {
    return this.resendAfterRestart;
  }

  /**
   * Send `method` to server `s`; big arrays of the reply land straight in `replyInto`. `resend`: the request sent
   * over the staging buffers, and its whole form for a restarted server.
   */
  async call<M extends PsMethod>(s: number, method: M, args: PsRequests[M], replyInto?: readonly FloatArray[], resend?: Resend<M>): Promise<PsReplies[M]> {
    let io = replyInto ? { replyInto } : undefined;
    if (resend) this.sharedCalls++;
    for (;;) {
      const c = this.clients[s]!;
      const epoch = c.epoch;
      try {
        if (this.resendAfterRestart) return (await c.call(method, args, io)) as PsReplies[M];
        if (this.broken) throw this.broken;
        let fail!: (e: Error) => void;
        const lost = new Promise<never>((_, reject) => (fail = reject));
        this.inflight.add(fail);
        try {
          return (await Promise.race([c.call(method, args, io), lost])) as PsReplies[M];
        } finally {
          this.inflight.delete(fail);
        }
      } catch (e) {
        if (!this.resendAfterRestart || !isShoalError(e, 'ERR_PEER_CLOSED')) throw unwrapRemote(e);
        await this.reconnect(s, epoch + 1);
        if (resend) {
          args = resend.args;
          io = resend.replyInto ? { replyInto: resend.replyInto } : undefined;
        }
      }
    }
  }

  private reconnect(s: number, minEpoch: number): Promise<void> {
    const c = this.clients[s]!;
    if (c.epoch >= minEpoch) return Promise.resolve();
    let p = this.reconnecting.get(s);
    if (!p) {
      p = c
        .reconnect(minEpoch)
        .then(async () => {
          this.restart.dropped(s);
          this.controlBound(s, (await c.call('hello', [this.rank])) as ServerHello);
          // on the new connection itself: a failure here fails this reconnect (a `call` would wait for it)
          await this.declareTo(s, [...this.declared.values()], (a) => c.call('declare', a) as Promise<PsReplies['declare']>);
          await this.restart.restored(s);
        })
        .finally(() => this.reconnecting.delete(s));
      this.reconnecting.set(s, p);
    }
    return p;
  }

  /** The bound server `s` puts on this connection before it declares keys (from its hello). */
  controlBound(s: number, hello: ServerHello): void {
    if (hello.callerBound > 0) this.clients[s]!.limitOutgoing(hello.callerBound, `server ${s}'s bound before keys are declared (KVWorker.declare)`);
  }

  /**
   * Declare `specs` (those not declared yet) to every server: each raises its bound on this worker's messages to
   * fit them (`server/caller-bounds.ts`). Resolves once every server acknowledged; only then may their values go out.
   */
  async declare(specs: readonly KeySpec[]): Promise<void> {
    const fresh = new Map<string, KeySpec>();
    for (const sp of specs) if (!this.declared.has(sp.key)) fresh.set(sp.key, sp);
    if (fresh.size === 0) return;
    const list = [...fresh.values()];
    await Promise.all(this.clients.map((_, s) => this.declareTo(s, list, (a) => this.call(s, 'declare', a))));
    for (const sp of list) this.declared.set(sp.key, sp);
  }

  /** Declare `specs` to server `s`, in requests of at most `DECLARE_BATCH_BYTES` of specs each (under its bound). */
  private async declareTo(s: number, specs: readonly KeySpec[], send: (args: PsRequests['declare']) => Promise<PsReplies['declare']>): Promise<void> {
    let batch: KeySpec[] = [];
    let bytes = 0;
    const flush = async () => {
      if (!batch.length) return;
      const r = await send([this.rank, batch]);
      this.clients[s]!.limitOutgoing(r.bound, `server ${s}'s bound on worker ${this.rank}'s messages (the keys it declared)`);
      batch = [];
      bytes = 0;
    };
    for (const sp of specs) {
      const n = Buffer.byteLength(JSON.stringify(sp));
      if (bytes + n > DECLARE_BATCH_BYTES) await flush();
      batch.push(sp);
      bytes += n;
    }
    await flush();
  }

  /** Bytes and calls summed over all servers. */
  stats(): RpcStats {
    const t = { bytesSent: 0, bytesReceived: 0, calls: 0 };
    for (const c of this.clients) {
      const s = c.stats();
      t.bytesSent += s.bytesSent;
      t.bytesReceived += s.bytesReceived;
      t.calls += s.calls;
    }
    return t;
  }

  async close(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.close()));
  }
}

/** A server-side ERR_MISMATCH (etc.) keeps its code on the worker; the ERR_REMOTE stays as the cause. */
export function unwrapRemote(e: unknown): unknown {
  if (!isShoalError(e, 'ERR_REMOTE')) return e;
  const code = e.context.remoteCode;
  if (typeof code === 'string' && PASS_THROUGH.has(code)) return new ShoalError(code as ShoalErrorCode, e.message, e.context, e);
  return e;
}

/**
 * Put a server's reply values into the caller's arrays: values that arrived straight in them (`replyInto`, or
 * the staging buffers when the caller passed those) are already there; others are copied.
 */
export function landValues(what: string, s: number, keys: readonly string[], got: readonly (FloatArray | null)[], targets: readonly FloatArray[], staged: readonly FloatArray[]): void {
  if (got.length !== targets.length) throw Errors.badFrame(what, `server ${s} sent ${got.length} values, expected ${targets.length}`);
  got.forEach((g, i) => {
    const t = targets[i]!;
    if (g === null) {
      // written into the staging buffer by the server
      const st = staged[i];
      if (!st) throw Errors.badFrame(`${what} of ${keys[i]}`, `server ${s} replied through staging buffers this request did not use`);
      if (st.buffer !== t.buffer || st.byteOffset !== t.byteOffset) t.set(st);
      return;
    }
    if (g.length !== t.length) throw Errors.badFrame(`${what} of ${keys[i]}`, `server ${s} sent ${g.length} elements, expected ${t.length}`);
    if (g.buffer !== t.buffer || g.byteOffset !== t.byteOffset) t.set(g);
  });
}
