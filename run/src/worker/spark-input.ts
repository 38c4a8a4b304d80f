import type { Readable } from 'node:stream';

/**
 * The byte source of a worker launched by Spark (python/shoal_spark): its partition arrives on stdin as one Arrow
 * IPC stream (`SHOAL_INPUT=stdin`). Pipes deliver it in pieces of at most 64 KiB; this regroups them into pieces of
 * at least `minChunkBytes` (one copy each) so the Arrow reader assembles few large messages instead of many
 * small ones (2-3x the decode rate for MB-sized record batches). Hand the result to `openArrowStream`.
 *
 *   const ds = await openArrowStream(sparkInput(), { name: `rank ${rank} stdin` });
 *
 * The yielded buffers are owned by the consumer. Ends when `input` ends; an error of `input` is rethrown.
 */
export async function* sparkInput(input: Readable | AsyncIterable<Uint8Array> = process.stdin, minChunkBytes = 1 << 20): AsyncGenerator<Uint8Array> {
  if (!Number.isInteger(minChunkBytes) || minChunkBytes < 1) throw new RangeError(`minChunkBytes must be a positive integer, got ${minChunkBytes}`);
  let parts: Uint8Array[] = [];
  let held = 0;
  for await (const piece of input as AsyncIterable<Uint8Array>) {
    if (piece.byteLength >= minChunkBytes && held === 0) {
      yield piece;
      continue;
    }
    parts.push(piece);
    held += piece.byteLength;
    if (held >= minChunkBytes) {
      yield concat(parts, held);
      parts = [];
      held = 0;
    }
  }
  if (held > 0) yield concat(parts, held);
}

function concat(parts: readonly Uint8Array[], n: number): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.byteLength;
  }
  return out;
}
