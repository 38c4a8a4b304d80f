import { Errors, type NumericArray, type ProcessGroup } from '@shoal/core';
import type { Header } from '@shoal/core/group';
import type { Timeline, TimelineLane } from '@shoal/core/telemetry';

/**
 * Where a collective records its stages on the timeline (`RingSync` passes it when tracing): `wait` (a receive)
 * and `reduce` (a kernel) on `lane`, each send from issue to completion on `sends` (sends overlap the waits).
 */
export interface OpTrace {
  readonly timeline: Timeline;
  readonly lane: TimelineLane;
  readonly sends: TimelineLane;
}

/** Element types a collective accepts. */
export type Dtype = 'float32' | 'float64' | 'int32';

export function dtypeOf(a: NumericArray): Dtype {
  if (a instanceof Float32Array) return 'float32';
  if (a instanceof Float64Array) return 'float64';
  if (a instanceof Int32Array) return 'int32';
  throw Errors.invalidArg('data', 'must be a Float32Array, Float64Array or Int32Array');
}

/** Split `n` elements into `parts` contiguous ranges; the first `n % parts` get one extra element. */
export function partition(n: number, parts: number): { start: number; len: number }[] {
  const base = Math.floor(n / parts);
  const rem = n % parts;
  const out: { start: number; len: number }[] = [];
  let start = 0;
  for (let i = 0; i < parts; i++) {
    const len = base + (i < rem ? 1 : 0);
    out.push({ start, len });
    start += len;
  }
  return out;
}

/** Split a range into segments of at most `segElems` elements (none for an empty range). */
export function segments(start: number, len: number, segElems: number): { start: number; len: number }[] {
  const out: { start: number; len: number }[] = [];
  for (let o = 0; o < len; o += segElems) out.push({ start: start + o, len: Math.min(segElems, len - o) });
  return out;
}

/** A typed view of `bytes` of the same type as `like`, copying only if `bytes` is misaligned. */
export function viewAs<T extends NumericArray | Uint16Array>(like: T, bytes: Uint8Array, len: number): T {
  const C = like.constructor as unknown as { new (b: ArrayBufferLike, o: number, l: number): T; BYTES_PER_ELEMENT: number };
  const es = C.BYTES_PER_ELEMENT;
  const b = bytes.byteOffset % es === 0 ? bytes : copyBytes(bytes);
  return new C(b.buffer, b.byteOffset, len);
}

/** A fresh copy in its own ArrayBuffer (unlike `Buffer#slice`, which shares memory). */
export function copyBytes(b: Uint8Array): Uint8Array {
  const c = new Uint8Array(b.byteLength);
  c.set(b);
  return c;
}

export function bytesOf(a: ArrayBufferView, start = 0, len?: number): Uint8Array {
  const es = (a as unknown as { BYTES_PER_ELEMENT: number }).BYTES_PER_ELEMENT;
  const n = len ?? (a.byteLength / es - start);
  return new Uint8Array(a.buffer, a.byteOffset + start * es, n * es);
}

/** Payloads at least this large are sent without a copy (`ProcessGroup.sendRef`). */
export const ZERO_COPY_BYTES = 32 << 10;

/**
 * Send `bytes` to rank `r`: by reference (no copy) when large, else copied behind the header. The returned
 * promise (also tracked by `out`) says when `bytes` may change again.
 */
export function sendBytes(g: ProcessGroup, out: Outbox, r: number, h: Header, bytes: Uint8Array): Promise<void> {
  const p = bytes.byteLength >= ZERO_COPY_BYTES ? g.sendRef(r, h, bytes) : g.send(r, h, bytes);
  out.add(p);
  return p.catch(() => {});
}

/** Check a received payload has the expected size; a difference means the ranks disagree on the layout. */
export function expectBytes(g: ProcessGroup, from: number, what: string, got: number, want: number): void {
  if (got !== want)
    throw Errors.mismatch(what, `rank ${g.rank} expected ${want} bytes from rank ${from} but received ${got}`, { rank: g.rank, peer: from });
}

/**
 * Outstanding sends of one collective. A failed send breaks the group at once (so a pending recv fails now
 * instead of at its timeout) and its error is the one reported.
 */
export class Outbox {
  private readonly pending: Promise<void>[] = [];
  private failure: unknown;
  constructor(
    private readonly g: ProcessGroup,
    private readonly trace?: OpTrace,
  ) {}
  add(p: Promise<void>): void {
    const t = this.trace;
    if (t) {
      const t0 = t.timeline.now();
      p = p.finally(() => t.timeline.span(t.sends, 'send', t0));
    }
    this.pending.push(
      p.catch((e: unknown) => {
        if (this.failure === undefined) this.failure = e;
        void this.g.abort(e instanceof Error ? e : new Error(String(e)));
      }),
    );
  }
  /** The first send error, if any (prefer it over the recv error it caused). */
  get error(): unknown {
    return this.failure;
  }
  async flush(): Promise<void> {
    await Promise.all(this.pending);
    if (this.failure !== undefined) throw this.failure;
  }
  /** Rethrow the send error that caused `e`, if there was one. */
  rethrow(e: unknown): never {
    throw this.failure ?? e;
  }
}
