import { Errors } from '@shoal/core';
import type { GuardedCall, GuardedOutcome, PsReplies } from '../protocol.js';
import { signaturesAgree } from '../signature.js';

interface Gather {
  values: ({ v: unknown } | undefined)[];
  ops: (string | undefined)[];
  count: number;
  p: Promise<unknown[]>;
  resolve: (v: unknown[]) => void;
  reject: (e: unknown) => void;
  timer: ReturnType<typeof setTimeout>;
  /** Set when the gather failed (an operation mismatch): later arrivals get it at once. */
  error?: unknown;
}

/**
 * Gathers on a server shard: every worker contributes one value under a tag and every caller gets all values in
 * rank order (barriers, scalar sums, agreement checks). Each contribution may name its operation kind: when two
 * workers reach the same tag with different kinds (a barrier on one rank, an allreduce on another) every worker
 * that reaches the tag gets ERR_MISMATCH at once, naming both, instead of waiting for the timeout.
 */
export class Gathers {
  private readonly open = new Map<string, Gather>();

  constructor(
    private readonly numWorkers: number,
    private readonly serverIndex: number,
    private readonly timeoutMs: number,
  ) {}

  /** Tags open now (waiting for workers, or failed and waiting for the rest to arrive). */
  get size(): number {
    return this.open.size;
  }

  gather(rank: number, tag: string, value: unknown, op?: string): Promise<unknown[]> {
    let g = this.open.get(tag);
    if (!g) g = this.create(tag);
    if (g.values[rank] !== undefined) throw Errors.state(`worker ${rank} joined gather ${tag} twice`);
    g.values[rank] = { v: value };
    g.ops[rank] = op;
    g.count++;
    const p = g.p;
    if (g.error === undefined) {
      const other = op === undefined ? -1 : g.ops.findIndex((o, r) => r !== rank && g.values[r] !== undefined && o !== undefined && o !== op);
      if (other >= 0) {
        g.error = Errors.mismatch(
          'collective order',
          `call ${tag} is ${g.ops[other]} on rank ${other} but ${op} on rank ${rank} (every rank must call the same collectives in the same order)`,
          { ranks: [other, rank] },
        );
        g.reject(g.error);
      }
    }
    if (g.count === this.numWorkers) {
      this.close(tag, g);
      if (g.error === undefined) g.resolve(g.values.map((x) => x!.v));
    }
    return p;
  }

  /** Worker `rank` is gone: fail every gather it has not joined with `err`. */
  failMissing(rank: number, err: unknown): void {
    for (const [tag, g] of this.open) {
      if (g.values[rank] !== undefined) continue;
      this.close(tag, g);
      g.reject(err);
    }
  }

  private create(tag: string): Gather {
    let resolve!: (v: unknown[]) => void;
    let reject!: (e: unknown) => void;
    const p = new Promise<unknown[]>((a, b) => {
      resolve = a;
      reject = b;
    });
    p.catch(() => {}); // every caller gets `p` and handles it; a failed gather is not also unhandled here
    const g: Gather = { values: new Array(this.numWorkers).fill(undefined), ops: new Array(this.numWorkers).fill(undefined), count: 0, p, resolve, reject, timer: undefined! };
    g.timer = setTimeout(() => {
      if (this.open.get(tag) !== g) return;
      this.open.delete(tag);
      if (g.error !== undefined) return;
      const missing = g.values.map((v, i) => (v === undefined ? i : -1)).filter((i) => i >= 0);
      const op = g.ops.find((o) => o !== undefined);
      reject(Errors.timeout(`gather ${tag}${op ? ` (${op})` : ''} on server ${this.serverIndex}: waiting for worker${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`, this.timeoutMs, { waitingFor: missing }));
    }, this.timeoutMs);
    this.open.set(tag, g);
    return g;
  }

  private close(tag: string, g: Gather): void {
    clearTimeout(g.timer);
    if (this.open.get(tag) === g) this.open.delete(tag);
  }
}

/**
 * The server side of a guarded collective (`PsRequests.guarded`): once the gather `all` of every worker's
 * signature settles, start `calls` in order through `call` (as separate requests would be) when the signatures
 * of `op` agree, else run nothing and reply `values: null`. A call that throws rejects the reply.
 */
export function runGuarded(all: Promise<unknown[]>, op: string, calls: GuardedCall[], call: (c: GuardedCall) => unknown): Promise<PsReplies['guarded']> {
  return all.then((all) => {
    if (!signaturesAgree(op, all)) return { all, values: null };
    const run = (c: GuardedCall) => {
      try {
        return Promise.resolve(call(c));
      } catch (e) {
        return Promise.reject(e);
      }
    };
    return Promise.all(calls.map(run)).then((values) => ({ all, values }));
  });
}

/** One collective of a `guardedMany` request, settled: its reply, or the error it failed with (as data). */
export function settleGuarded(run: () => Promise<PsReplies['guarded']>): Promise<GuardedOutcome> {
  const failed = (e: unknown): GuardedOutcome => {
    const code = (e as { code?: unknown }).code;
    return { error: { message: e instanceof Error ? e.message : String(e), ...(typeof code === 'string' ? { code } : {}) } };
  };
  try {
    return run().then((r): GuardedOutcome => r, failed);
  } catch (e) {
    return Promise.resolve(failed(e));
  }
}
