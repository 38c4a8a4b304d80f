import { readFile } from 'node:fs/promises';
import { gunzipSync } from 'node:zlib';
import { Errors } from '@shoal/core';

/** The 8x8 digits set as flat arrays: `pixels` is `[n, 64]` row-major scaled to 0..1, `labels` 0..9. */
export interface Digits {
  n: number;
  pixels: Float32Array;
  labels: Int32Array;
}

/** Path of the copy shipped in the repo (`data/digits/`, see its SOURCE.md). */
export const DIGITS_PATH = new URL('../../../data/digits/digits.csv.gz', import.meta.url).pathname;

/** Parse `digits.csv.gz` (64 pixel counts 0..16 then the label, no header). Throws ERR_DATA naming the line. */
export async function loadDigits(path = DIGITS_PATH): Promise<Digits> {
  const text = gunzipSync(await readFile(path)).toString('utf8');
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  const pixels = new Float32Array(lines.length * 64);
  const labels = new Int32Array(lines.length);
  lines.forEach((line, i) => {
    const f = line.split(',');
    if (f.length !== 65) throw Errors.data(`${path}:${i + 1}`, `expected 65 fields, got ${f.length}`);
    for (let j = 0; j < 64; j++) pixels[i * 64 + j] = Number(f[j]) / 16;
    const y = Number(f[64]);
    if (!Number.isInteger(y) || y < 0 || y > 9) throw Errors.data(`${path}:${i + 1}`, `label must be 0..9, got ${f[64]}`);
    labels[i] = y;
  });
  return { n: lines.length, pixels, labels };
}

/** Deterministic train/test split: a seeded shuffle, then the last `testFraction` rows are the test set. */
export function splitDigits(d: Digits, testFraction = 0.2, seed = 42): { train: Digits; test: Digits } {
  const order = Array.from({ length: d.n }, (_, i) => i);
  let s = seed >>> 0;
  for (let i = d.n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  const nTest = Math.round(d.n * testFraction);
  const take = (rows: number[]): Digits => {
    const pixels = new Float32Array(rows.length * 64);
    const labels = new Int32Array(rows.length);
    rows.forEach((r, k) => {
      pixels.set(d.pixels.subarray(r * 64, r * 64 + 64), k * 64);
      labels[k] = d.labels[r]!;
    });
    return { n: rows.length, pixels, labels };
  };
  return { train: take(order.slice(0, d.n - nTest)), test: take(order.slice(d.n - nTest)) };
}
