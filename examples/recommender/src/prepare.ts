import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { Errors } from '@shoal/core';
import type { DatasetConfig } from './config.js';
import { parseCsv } from './csv.js';
import { Rng } from '@shoal/core';

/** Baskets in CSR layout: basket b holds `items[offsets[b] .. offsets[b+1])`, bought by `users[b]` at `times[b]`. */
export interface Baskets {
  offsets: Int32Array;
  items: Int32Array;
  users: Int32Array;
  /** Milliseconds since the epoch (UTC). */
  times: Float64Array;
}

/** Test baskets: `items` holds the visible items, `hidden[b]` the one item to recover. */
export interface TestBaskets extends Baskets { hidden: Int32Array }

export interface CleanStats {
  rawRows: number;
  droppedEmptyUser: number;
  droppedCancelled: number;
  droppedQuantity: number;
  droppedItem: number;
  keptRows: number;
}

export interface PrepareStats extends CleanStats {
  baskets: number;
  trainBaskets: number;
  /** Test-period baskets before the >= 2 catalog items rule. */
  testPeriodBaskets: number;
  testBaskets: number;
  /** Test baskets whose user never bought in the training period. */
  testColdUsers: number;
  /** ISO date of the split: training baskets are strictly earlier. */
  cutoff: string;
  firstDay: string;
  lastDay: string;
}

/**
 * The prepared task. Item ids are 0..numItems-1 over items seen in training (the catalog every test query ranks);
 * user id 0 means "unknown user" (no training history); known users are 1..numUsers-1.
 */
export interface Prepared {
  name: string;
  attribution: string;
  numItems: number;
  numUsers: number;
  itemKeys: string[];
  itemNames: string[];
  userKeys: string[];
  train: Baskets;
  test: TestBaskets;
  stats: PrepareStats;
}

/** A cleaned row: the fields the task needs. */
export interface CleanRow { user: string; item: string; basket: string; time: number; name: string }

function parseTime(raw: string, fmt: DatasetConfig['timestampFormat'], where: string): number {
  let t: number;
  if (fmt === 'datetime') {
    const s = raw.length >= 16 && raw[10] === ' ' ? `${raw.slice(0, 10)}T${raw.slice(11)}` : raw;
    t = Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(s) || s.length <= 10 ? s : `${s}Z`);
  } else {
    t = Number(raw) * (fmt === 'unix-s' ? 1000 : 1);
  }
  if (!Number.isFinite(t)) throw Errors.data(where, `cannot read timestamp ${JSON.stringify(raw)} as ${fmt}`);
  return t;
}

/**
 * Read the configured CSV text and apply the cleaning rules (SOURCE.md for Online Retail): drop rows with an empty
 * user, a cancelled basket, a quantity below the minimum, or an item id that is not a product. Returns the kept
 * rows in file order and the drop counts (each row counts under the first rule it fails).
 */
export function cleanRows(text: string, cfg: DatasetConfig, where: string): { rows: CleanRow[]; stats: CleanStats } {
  const { header, rows } = parseCsv(text, where);
  const col = (name: string | undefined): number => {
    if (name === undefined) return -1;
    const i = header.indexOf(name);
    if (i < 0) throw Errors.data(where, `column ${JSON.stringify(name)} not found; the header has ${header.join(', ')}`);
    return i;
  };
  const cu = col(cfg.columns.user), ci = col(cfg.columns.item), cb = col(cfg.columns.basket), ct = col(cfg.columns.timestamp);
  const cq = col(cfg.columns.quantity), cn = col(cfg.columns.itemName);
  const f = cfg.filters;
  const itemRe = f.itemPattern !== undefined ? new RegExp(f.itemPattern) : null;
  const stats: CleanStats = { rawRows: rows.length, droppedEmptyUser: 0, droppedCancelled: 0, droppedQuantity: 0, droppedItem: 0, keptRows: 0 };
  const out: CleanRow[] = [];
  for (let r = 0; r < rows.length; r++) {
    const row = rows[r]!;
    const user = row[cu]!.trim();
    if (f.dropEmptyUser && user === '') { stats.droppedEmptyUser++; continue; }
    const basket = row[cb]!.trim();
    if (f.cancelledBasketPrefix !== undefined && basket.startsWith(f.cancelledBasketPrefix)) { stats.droppedCancelled++; continue; }
    if (f.minQuantity !== undefined && cq >= 0) {
      const q = Number(row[cq]);
      if (!Number.isFinite(q)) throw Errors.data(where, `row ${r + 2}: quantity ${JSON.stringify(row[cq])} is not a number`);
      if (q < f.minQuantity) { stats.droppedQuantity++; continue; }
    }
    const item = row[ci]!.trim();
    if (item === '' || (itemRe !== null && !itemRe.test(item))) { stats.droppedItem++; continue; }
    if (basket === '') throw Errors.data(where, `row ${r + 2}: empty basket id`);
    out.push({ user, item, basket, time: parseTime(row[ct]!, cfg.timestampFormat, `${where} row ${r + 2}`), name: cn >= 0 ? row[cn]! : '' });
  }
  stats.keptRows = out.length;
  return { rows: out, stats };
}

/**
 * Group cleaned rows into baskets, split by time (the last `split.testDays` days are the test period), index the
 * catalog from training, and pick the hidden item of each test basket with `seed`. A test basket keeps only catalog
 * items (an item never sold in training cannot be recommended) and needs >= 2 of them. Duplicate lines of one item
 * in a basket count once.
 */
export function buildTask(rows: CleanRow[], stats: CleanStats, cfg: DatasetConfig, seed = 1): Prepared {
  interface B { user: string; time: number; items: string[]; seen: Set<string> }
  const byId = new Map<string, B>();
  const names = new Map<string, string>();
  for (const r of rows) {
    let b = byId.get(r.basket);
    if (b === undefined) { b = { user: r.user, time: r.time, items: [], seen: new Set() }; byId.set(r.basket, b); }
    if (r.time < b.time) b.time = r.time;
    if (!b.seen.has(r.item)) { b.seen.add(r.item); b.items.push(r.item); }
    if (r.name !== '' && !names.has(r.item)) names.set(r.item, r.name);
  }
  const baskets = [...byId.values()].sort((a, b) => a.time - b.time);
  if (baskets.length === 0) throw Errors.data(cfg.name, 'no rows left after cleaning');
  const first = baskets[0]!.time, last = baskets[baskets.length - 1]!.time;
  const dayMs = 86_400_000;
  const cutoff = Math.floor(last / dayMs) * dayMs - (cfg.split.testDays - 1) * dayMs;
  const trainB = baskets.filter((b) => b.time < cutoff);
  const testB = baskets.filter((b) => b.time >= cutoff);
  if (trainB.length === 0) throw Errors.data(cfg.name, `split.testDays=${cfg.split.testDays} leaves no training baskets`);

  const itemIds = new Map<string, number>();
  const userIds = new Map<string, number>([['', 0]]);
  const itemKeys: string[] = [], userKeys: string[] = ['<unknown>'];
  for (const b of trainB) {
    for (const it of b.items) if (!itemIds.has(it)) { itemIds.set(it, itemKeys.length); itemKeys.push(it); }
    if (!userIds.has(b.user)) { userIds.set(b.user, userKeys.length); userKeys.push(b.user); }
  }
  const pack = (list: { user: number; time: number; items: number[] }[]): Baskets => {
    const offsets = new Int32Array(list.length + 1);
    let n = 0;
    for (let i = 0; i < list.length; i++) { n += list[i]!.items.length; offsets[i + 1] = n; }
    const items = new Int32Array(n), users = new Int32Array(list.length), times = new Float64Array(list.length);
    list.forEach((b, i) => { items.set(b.items, offsets[i]); users[i] = b.user; times[i] = b.time; });
    return { offsets, items, users, times };
  };
  const train = pack(trainB.map((b) => ({ user: userIds.get(b.user)!, time: b.time, items: b.items.map((it) => itemIds.get(it)!) })));
  const rng = new Rng(seed);
  const hidden: number[] = [];
  const testList: { user: number; time: number; items: number[] }[] = [];
  let cold = 0;
  for (const b of testB) {
    const items = b.items.map((it) => itemIds.get(it)).filter((x): x is number => x !== undefined);
    if (items.length < 2) continue;
    const h = rng.int(items.length);
    hidden.push(items[h]!);
    items.splice(h, 1);
    const user = userIds.get(b.user) ?? 0;
    if (user === 0) cold++;
    testList.push({ user, time: b.time, items });
  }
  const test: TestBaskets = { ...pack(testList), hidden: Int32Array.from(hidden) };
  const day = (t: number): string => new Date(t).toISOString().slice(0, 10);
  return {
    name: cfg.name,
    attribution: cfg.attribution ?? '',
    numItems: itemKeys.length,
    numUsers: userKeys.length,
    itemKeys,
    itemNames: itemKeys.map((k) => names.get(k) ?? ''),
    userKeys,
    train,
    test,
    stats: {
      ...stats, baskets: baskets.length, trainBaskets: trainB.length, testPeriodBaskets: testB.length,
      testBaskets: testList.length, testColdUsers: cold, cutoff: day(cutoff), firstDay: day(first), lastDay: day(last),
    },
  };
}

/** Resolve the configured data file against `baseDir` (the config file's folder, or the repo root). */
export function dataPath(cfg: DatasetConfig, baseDir: string): string {
  return isAbsolute(cfg.file) ? cfg.file : resolve(baseDir, cfg.file);
}

function readText(path: string): string {
  if (!existsSync(path)) throw Errors.data(path, 'data file not found');
  const buf = readFileSync(path);
  return (path.endsWith('.gz') ? gunzipSync(buf) : buf).toString('utf8');
}

const arrays = ['offsets', 'items', 'users', 'times', 'hidden'] as const;
function toJson(p: Prepared): string {
  const enc = (b: Baskets | TestBaskets): Record<string, unknown> =>
    Object.fromEntries(arrays.filter((k) => k in b).map((k) => [k, Array.from((b as TestBaskets)[k])]));
  return JSON.stringify({ ...p, train: enc(p.train), test: enc(p.test) });
}
function fromJson(s: string): Prepared {
  const o = JSON.parse(s) as Prepared & { train: Record<string, number[]>; test: Record<string, number[]> };
  const dec = (b: Record<string, number[]>): TestBaskets => ({
    offsets: Int32Array.from(b.offsets!), items: Int32Array.from(b.items!), users: Int32Array.from(b.users!),
    times: Float64Array.from(b.times!), hidden: Int32Array.from(b.hidden ?? []),
  });
  return { ...o, train: dec(o.train), test: dec(o.test) };
}

/**
 * Prepare the task for `cfg`, cached in `cacheDir` under a key of the config, the seed and the data file's size
 * and mtime (a changed file or config rebuilds). Returns the task and whether it came from the cache.
 */
export function prepare(cfg: DatasetConfig, baseDir: string, cacheDir: string, seed = 1): { data: Prepared; cached: boolean; path: string; ms: number } {
  const t0 = Date.now();
  const file = dataPath(cfg, baseDir);
  if (!existsSync(file)) throw Errors.data(file, `data file not found (config ${cfg.name}, file ${cfg.file})`);
  const st = statSync(file);
  const key = createHash('sha1').update(JSON.stringify({ cfg, seed, size: st.size, mtime: st.mtimeMs, v: 1 })).digest('hex').slice(0, 12);
  const path = join(cacheDir, `${cfg.name}-${key}.json`);
  if (existsSync(path)) return { data: fromJson(readFileSync(path, 'utf8')), cached: true, path, ms: Date.now() - t0 };
  const { rows, stats } = cleanRows(readText(file), cfg, file);
  const data = buildTask(rows, stats, cfg, seed);
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.${process.pid}.tmp`;
  writeFileSync(tmp, toJson(data));
  renameSync(tmp, path);
  return { data, cached: false, path, ms: Date.now() - t0 };
}

/** Load a cache file written by `prepare` (workers use this: the launcher prepares once). */
export function loadPrepared(path: string): Prepared {
  if (!existsSync(path)) throw Errors.data(path, 'prepared task not found');
  return fromJson(readFileSync(path, 'utf8'));
}
