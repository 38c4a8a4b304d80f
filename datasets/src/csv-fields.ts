// Field decoders of the CSV parser (csv-parse.ts): bytes of one field -> string, number, timestamp or hash,
// without building a string for numbers. Hand-written for speed: the parser's hot path (bench datasets).
import { FNV1A_OFFSET, fnv1aStep } from '@shoal/core/util';

const decoder = new TextDecoder('utf-8', { fatal: false });

/** A field's text; `quote` >= 0 for a quoted field (its doubled quotes are undone). */
export function text(b: Uint8Array, s: number, e: number, quote: number): string {
  const t = decoder.decode(b.subarray(s, e));
  if (quote < 0) return t;
  const qc = String.fromCharCode(quote);
  return t.includes(qc) ? t.split(qc + qc).join(qc) : t;
}

const POW10 = [1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22];

/** Decimal text -> number; NaN if not a number. Exact fast path (Clinger) when digits fit 2^53 and 10^k <= 1e22. */
export function parseFloatBytes(b: Uint8Array, s: number, e: number): number {
  let i = s;
  while (i < e && b[i] === 0x20) i++;
  while (e > i && b[e - 1] === 0x20) e--;
  let neg = false;
  if (b[i] === 0x2d) {
    neg = true;
    i++;
  } else if (b[i] === 0x2b) i++;
  let mant = 0;
  let digits = 0;
  let scale = 0;
  let any = false;
  while (i < e) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 9) break;
    mant = mant * 10 + d;
    digits++;
    any = true;
    i++;
  }
  if (i < e && b[i] === 0x2e) {
    i++;
    while (i < e) {
      const d = b[i]! - 0x30;
      if (d < 0 || d > 9) break;
      mant = mant * 10 + d;
      digits++;
      scale++;
      any = true;
      i++;
    }
  }
  // Exponents, more than 15 significant digits or anything unexpected: the general (slower) path.
  if (!any || i !== e || digits > 15) return slow(b, s, e);
  // mant < 10^15 < 2^53 and 10^scale (scale <= 15) are exact, so one division rounds correctly.
  const v = scale === 0 ? mant : mant / POW10[scale]!;
  return neg ? -v : v;
}

const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

function slow(b: Uint8Array, s: number, e: number): number {
  const t = decoder.decode(b.subarray(s, e)).trim();
  return DECIMAL.test(t) ? Number(t) : NaN;
}

/** Integer text (a zero fraction allowed) -> number, or NaN. */
export function parseIntBytes(b: Uint8Array, s: number, e: number): number {
  let i = s;
  let neg = false;
  if (b[i] === 0x2d) {
    neg = true;
    i++;
  } else if (b[i] === 0x2b) i++;
  let v = 0;
  const d0 = i;
  while (i < e) {
    const d = b[i]! - 0x30;
    if (d < 0 || d > 9) break;
    v = v * 10 + d;
    i++;
  }
  if (i === d0) return NaN;
  if (i < e && b[i] === 0x2e) {
    i++;
    while (i < e && b[i] === 0x30) i++;
  }
  if (i !== e) return NaN;
  return neg ? -v : v;
}

function digitsAt(b: Uint8Array, i: number, n: number): number {
  let v = 0;
  for (let k = 0; k < n; k++) {
    const d = b[i + k]! - 0x30;
    if (d < 0 || d > 9) return NaN;
    v = v * 10 + d;
  }
  return v;
}

/** `YYYY-MM-DD[ T]HH:MM[:SS]` or `YYYY-MM-DD` -> seconds since the epoch (UTC), or NaN. */
export function parseTimestampBytes(b: Uint8Array, s: number, e: number): number {
  const len = e - s;
  if (len < 10 || b[s + 4] !== 0x2d || b[s + 7] !== 0x2d) return NaN;
  const y = digitsAt(b, s, 4);
  const mo = digitsAt(b, s + 5, 2);
  const d = digitsAt(b, s + 8, 2);
  let h = 0;
  let mi = 0;
  let sec = 0;
  if (len > 10) {
    const sep = b[s + 10];
    if ((sep !== 0x20 && sep !== 0x54) || len < 16 || b[s + 13] !== 0x3a) return NaN;
    h = digitsAt(b, s + 11, 2);
    mi = digitsAt(b, s + 14, 2);
    if (len > 16) {
      if (len !== 19 || b[s + 16] !== 0x3a) return NaN;
      sec = digitsAt(b, s + 17, 2);
    }
  }
  if (!(mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 && sec < 61)) return NaN;
  return Date.UTC(y, mo - 1, d, h, mi, sec) / 1000;
}

export function fnv1a(b: Uint8Array, s: number, e: number, quoted: number): number {
  let h = FNV1A_OFFSET;
  for (let i = s; i < e; i++) {
    const c = b[i]!;
    if (c === quoted) i++; // "" -> "
    h = fnv1aStep(h, c);
  }
  return h >>> 0;
}
