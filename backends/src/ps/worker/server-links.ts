import { type RpcStats } from '@shoal/core/actor';
import { Errors, isShoalError, ShoalError, type ActorClient, type FloatArray, type ShoalErrorCode } from '@shoal/core';
import type { KVServer } from '../kv-server.js';
import type { PsMethod, PsReplies, PsRequests } from '../protocol.js';

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
 */
export class ServerLinks {
  private broken: Error | undefined;
  private readonly inflight = new Set<(e: Error) => void>();
  private readonly reconnecting = new Map<number, Promise<void>>();
  /** Requests whose values went through the staging buffers. */
  sharedCalls = 0;

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
          await c.call('hello', [this.rank]);
          await this.restart.restored(s);
        })
        .finally(() => this.reconnecting.delete(s));
      this.reconnecting.set(s, p);
    }
    return p;
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
