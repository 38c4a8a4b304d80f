import { Errors } from '@shoal/core';
import type { GuardedItem, PsReplies } from '../protocol.js';
import { unwrapRemote, type ServerLinks } from './server-links.js';

interface Queued {
  item: GuardedItem;
  resolve: (r: PsReplies['guarded']) => void;
  reject: (e: unknown) => void;
}

/**
 * Guarded collectives a worker starts in one turn (the Trainer starts a step's row-sparse and dense ones
 * together) leave as one request per server (`guardedMany`), answered in one reply: one wake-up of the server and
 * one of the worker instead of one per collective. The batch goes out at the end of the turn (a microtask); a turn
 * with one collective sends a plain `guarded`. Each collective still gets its own outcome.
 */
export class GuardedBatches {
  private readonly queued = new Map<number, Queued[]>();

  constructor(
    private readonly links: ServerLinks,
    private readonly rank: number,
  ) {}

  /** Send `item` to server `s` with the other collectives of this turn. */
  call(s: number, item: GuardedItem): Promise<PsReplies['guarded']> {
    return new Promise((resolve, reject) => {
      let q = this.queued.get(s);
      if (!q) {
        q = [];
        this.queued.set(s, q);
        queueMicrotask(() => this.flush(s));
      }
      q.push({ item, resolve, reject });
    });
  }

  private flush(s: number): void {
    const q = this.queued.get(s)!;
    this.queued.delete(s);
    if (q.length === 1) {
      const [one] = q as [Queued];
      this.links.call(s, 'guarded', [this.rank, ...one.item]).then(one.resolve, one.reject);
      return;
    }
    this.links.call(s, 'guardedMany', [this.rank, q.map((x) => x.item)]).then(
      (outs) => {
        if (!Array.isArray(outs) || outs.length !== q.length) {
          const err = Errors.badFrame(`guardedMany reply of server ${s}`, `${Array.isArray(outs) ? outs.length : typeof outs} outcomes for ${q.length} collectives`);
          for (const x of q) x.reject(err);
          return;
        }
        outs.forEach((o, i) => {
          const x = q[i]!;
          if ('error' in o) x.reject(unwrapRemote(Errors.remote(`ps server ${s}.guarded`, o.error.message, { remoteCode: o.error.code })));
          else x.resolve(o);
        });
      },
      (e: unknown) => {
        for (const x of q) x.reject(e);
      },
    );
  }
}
