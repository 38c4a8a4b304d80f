import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { Errors, Rng } from '@shoal/core';
import { openCsv, type Column, type CsvSchema, type Dataset } from '@shoal/datasets';
import { timestampParser, type ColumnRef, type DatasetConfig, type FeatureSource, type TableSource, type Words } from './config.js';

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
  /** Rows below `feedback.minRating` (explicit feedback made implicit). */
  droppedRating: number;
  droppedItem: number;
  keptRows: number;
}

export interface PrepareStats extends CleanStats {
  baskets: number;
  trainBaskets: number;
  /** Training baskets before the validation period (what model selection trains on). */
  fitBaskets: number;
  /** Validation baskets with >= 2 catalog items (one item hidden each). */
  validBaskets: number;
  /** ISO date where the validation period starts. */
  validFrom: string;
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
  words: Words;
  numItems: number;
  numUsers: number;
  itemKeys: string[];
  itemNames: string[];
  userKeys: string[];
  /** Every training basket, by time; the first `fitBaskets` precede the validation period. */
  train: Baskets;
  fitBaskets: number;
  /** The validation period's baskets (one item hidden each), for choosing epochs, learning rate, regularisation. */
  valid: TestBaskets;
  test: TestBaskets;
  stats: PrepareStats;
  /** Categorical item / user features (config `itemFeatures`, `userFeatures`), or absent. */
  features?: Features;
}

/** Compressed lists: entity e's token ids are `ids[offsets[e] .. offsets[e + 1])`. */
export interface TokenLists { offsets: Int32Array; ids: Int32Array }

/**
 * Feature tokens (`item:<column>=<value>`, `user:<column>=<value>`; sorted, ids 0..names.length-1) of the catalog
 * items and the known users (user 0, the unknown user, has none).
 */
export interface Features { names: string[]; item: TokenLists; user: TokenLists }

/** A cleaned row: the fields the task needs (`basket` is '' until sessions are derived). */
export interface CleanRow { user: string; item: string; basket: string; time: number; name: string }

/** The openCsv column name of a configured column: its header name, or its position as '0', '1', ... */
const colName = (c: ColumnRef): string => String(c);

async function openTable(src: TableSource, baseDir: string, schema: CsvSchema): Promise<Dataset> {
  const path = isAbsolute(src.file) ? src.file : resolve(baseDir, src.file);
  if (!existsSync(path)) throw Errors.data(path, 'data file not found');
  return openCsv(path, schema, { threads: 0, delimiter: src.delimiter, quote: src.quote, header: src.header });
}

type Nums = ArrayLike<number>;

const isNull = (c: Column, r: number): boolean => c.nullCount > 0 && (c.validity![(r + (c.validityOffset ?? 0)) >> 3]! & (1 << ((r + (c.validityOffset ?? 0)) & 7))) === 0;

/**
 * Read the configured log through the datasets CSV reader and apply the cleaning rules (SOURCE.md for Online
 * Retail): drop rows with an empty user, a cancelled basket, a quantity below the minimum, a rating below the
 * threshold (explicit feedback made implicit), or an item id that is not a product. Returns the kept rows in file
 * order and the drop counts (each row counts under the first rule it fails). Item names come from the log's name
 * column or the `itemNames` side file; without a basket column, sessions are derived (`deriveSessions`).
 */
export async function cleanRows(cfg: DatasetConfig, baseDir: string): Promise<{ rows: CleanRow[]; stats: CleanStats }> {
  const ic = cfg.interactions, cols = ic.columns;
  const unix = cfg.timestamp.format === 'unix-s' || cfg.timestamp.format === 'unix-ms';
  const schema: CsvSchema = { [colName(cols.user)]: { type: 'category' }, [colName(cols.item)]: { type: 'category' } };
  schema[colName(cols.timestamp)] = unix ? 'float64' : { type: 'category' };
  if (cols.basket !== undefined) schema[colName(cols.basket)] = { type: 'category' };
  if (cols.quantity !== undefined) schema[colName(cols.quantity)] = 'float64';
  if (cols.rating !== undefined) schema[colName(cols.rating)] = 'float64';
  if (cols.itemName !== undefined) schema[colName(cols.itemName)] = { type: 'category' };
  const ds = await openTable(ic, baseDir, schema);
  const dict = (c: ColumnRef | undefined): readonly string[] => (c === undefined ? [] : ds.schema.fields.find((f) => f.name === colName(c))!.dictionary ?? []);
  const f = cfg.filters;
  const itemRe = f.itemPattern !== undefined ? new RegExp(f.itemPattern) : null;
  const users = dict(cols.user), items = dict(cols.item), baskets = dict(cols.basket), names = dict(cols.itemName);
  const itemOk = items.map((it) => it.trim() !== '' && (itemRe === null || itemRe.test(it.trim())));
  const cancelled = baskets.map((b) => f.cancelledBasketPrefix !== undefined && b.trim().startsWith(f.cancelledBasketPrefix));
  const parse = timestampParser(cfg.timestamp);
  const times = unix ? [] : dict(cols.timestamp).map(parse);
  const scale = cfg.timestamp.format === 'unix-s' ? 1000 : 1;
  const stats: CleanStats = { rawRows: 0, droppedEmptyUser: 0, droppedCancelled: 0, droppedQuantity: 0, droppedRating: 0, droppedItem: 0, keptRows: 0 };
  const out: CleanRow[] = [];
  const minQ = f.minQuantity, minR = cfg.feedback.minRating;
  try {
    for (const part of ds.partitions) {
      for await (const ch of part.read({ columns: Object.keys(schema) })) {
        const c = (ref: ColumnRef | undefined): Column | undefined => (ref === undefined ? undefined : ch.columns[colName(ref)]);
        const cu = c(cols.user)!, ci = c(cols.item)!, ct = c(cols.timestamp)!, cb = c(cols.basket), cq = c(cols.quantity), cr = c(cols.rating), cn = c(cols.itemName);
        for (let r = 0; r < ch.rows; r++) {
          stats.rawRows++;
          const where = (): string => `${part.name}: record ${stats.rawRows}`;
          const user = isNull(cu, r) ? '' : users[(cu.values as Nums)[r]!]!.trim();
          if (f.dropEmptyUser && user === '') { stats.droppedEmptyUser++; continue; }
          let basket = '';
          if (cb !== undefined) {
            if (isNull(cb, r)) throw Errors.data(where(), 'empty basket id');
            const id = (cb.values as Nums)[r]!;
            if (cancelled[id]) { stats.droppedCancelled++; continue; }
            basket = baskets[id]!.trim();
          }
          if (cq !== undefined && minQ !== undefined && (isNull(cq, r) || (cq.values as Nums)[r]! < minQ)) { stats.droppedQuantity++; continue; }
          if (cr !== undefined && minR !== undefined && (isNull(cr, r) || (cr.values as Nums)[r]! < minR)) { stats.droppedRating++; continue; }
          if (isNull(ci, r) || !itemOk[(ci.values as Nums)[r]!]) { stats.droppedItem++; continue; }
          if (isNull(ct, r)) throw Errors.data(where(), 'empty timestamp');
          const time = unix ? (ct.values as Nums)[r]! * scale : times[(ct.values as Nums)[r]!]!;
          if (!Number.isFinite(time)) {
            const raw = unix ? String((ct.values as Nums)[r]) : dict(cols.timestamp)[(ct.values as Nums)[r]!];
            throw Errors.data(where(), `cannot read timestamp ${JSON.stringify(raw)} as ${cfg.timestamp.format}${cfg.timestamp.pattern ? ` ${JSON.stringify(cfg.timestamp.pattern)}` : ''}`);
          }
          out.push({ user, item: items[(ci.values as Nums)[r]!]!.trim(), basket, time, name: cn !== undefined && !isNull(cn, r) ? names[(cn.values as Nums)[r]!]! : '' });
        }
      }
    }
  } finally {
    await ds.close();
  }
  stats.keptRows = out.length;
  if (cfg.itemNames) {
    const side = await readItemNames(cfg.itemNames, baseDir);
    for (const row of out) row.name = side.get(row.item) ?? row.name;
  }
  if (cfg.sessions.by !== 'column') deriveSessions(out, cfg.sessions);
  return { rows: out, stats };
}

/** item id -> name from a side file (its own dialect). */
export async function readItemNames(src: NonNullable<DatasetConfig['itemNames']>, baseDir: string): Promise<Map<string, string>> {
  const ci = colName(src.columns.item), cn = colName(src.columns.name);
  const ds = await openTable(src, baseDir, { [ci]: { type: 'category' }, [cn]: { type: 'category' } });
  const dict = (n: string): readonly string[] => ds.schema.fields.find((f) => f.name === n)!.dictionary ?? [];
  const ids = dict(ci), names = dict(cn);
  const m = new Map<string, string>();
  try {
    for (const part of ds.partitions) {
      for await (const ch of part.read({ columns: [ci, cn] })) {
        const a = ch.columns[ci]!, b = ch.columns[cn]!;
        for (let r = 0; r < ch.rows; r++) if (!isNull(a, r) && !isNull(b, r)) m.set(ids[(a.values as Nums)[r]!]!.trim(), names[(b.values as Nums)[r]!]!);
      }
    }
  } finally {
    await ds.close();
  }
  return m;
}

/** id -> feature tokens (`<prefix>:<column>=<value>`) from a features side file. */
export async function readFeatureTokens(src: FeatureSource & { columns: { features: ColumnRef[] } }, idCol: ColumnRef, prefix: string, baseDir: string): Promise<Map<string, string[]>> {
  const ci = colName(idCol), fcols = src.columns.features.map(colName);
  const schema: CsvSchema = { [ci]: { type: 'category' } };
  for (const f of fcols) schema[f] = { type: 'category' };
  const ds = await openTable(src, baseDir, schema);
  const dict = (n: string): readonly string[] => ds.schema.fields.find((f) => f.name === n)!.dictionary ?? [];
  const ids = dict(ci), values = fcols.map(dict);
  const label = (c: ColumnRef): string => (typeof c === 'number' ? `c${c}` : c);
  const m = new Map<string, string[]>();
  try {
    for (const part of ds.partitions) {
      for await (const ch of part.read({ columns: [ci, ...fcols] })) {
        const a = ch.columns[ci]!;
        for (let r = 0; r < ch.rows; r++) {
          if (isNull(a, r)) continue;
          const id = ids[(a.values as Nums)[r]!]!.trim();
          const toks = m.get(id) ?? [];
          fcols.forEach((f, k) => {
            const c = ch.columns[f]!;
            if (isNull(c, r)) return;
            const raw = values[k]![(c.values as Nums)[r]!]!;
            for (const v of src.separator === null ? [raw] : raw.split(src.separator)) {
              const t = v.trim();
              if (t !== '') toks.push(`${prefix}:${label(src.columns.features[k]!)}=${t}`);
            }
          });
          m.set(id, toks);
        }
      }
    }
  } finally {
    await ds.close();
  }
  return m;
}

/** The configured features of a prepared task's items and users (undefined when the config has none). */
export async function buildFeatures(cfg: DatasetConfig, baseDir: string, p: Pick<Prepared, 'itemKeys' | 'userKeys'>): Promise<Features | undefined> {
  if (!cfg.itemFeatures && !cfg.userFeatures) return undefined;
  const item = cfg.itemFeatures ? await readFeatureTokens(cfg.itemFeatures, cfg.itemFeatures.columns.item, 'item', baseDir) : new Map<string, string[]>();
  const user = cfg.userFeatures ? await readFeatureTokens(cfg.userFeatures, cfg.userFeatures.columns.user, 'user', baseDir) : new Map<string, string[]>();
  const itemToks = p.itemKeys.map((k) => [...new Set(item.get(k) ?? [])]);
  // userKeys[0] is the unknown user: no features.
  const userToks = p.userKeys.map((k, u) => (u === 0 ? [] : [...new Set(user.get(k) ?? [])]));
  const names = [...new Set([...itemToks.flat(), ...userToks.flat()])].sort();
  const id = new Map(names.map((n, i) => [n, i]));
  const lists = (toks: string[][]): TokenLists => {
    const offsets = new Int32Array(toks.length + 1);
    toks.forEach((t, e) => (offsets[e + 1] = offsets[e]! + t.length));
    return { offsets, ids: Int32Array.from(toks.flat().map((t) => id.get(t)!)) };
  };
  return { names, item: lists(itemToks), user: lists(userToks) };
}

/**
 * Sessions for logs without a basket column: each user's rows in time order, a new session where the gap to the
 * previous row exceeds `idleMinutes` (`idle-gap`) or the UTC day changes (`day`), and after every `maxItems`
 * rows. Sets `row.basket` to `<user>#<n>`.
 */
export function deriveSessions(rows: CleanRow[], s: DatasetConfig['sessions']): void {
  const byUser = new Map<string, CleanRow[]>();
  for (const r of rows) {
    let l = byUser.get(r.user);
    if (l === undefined) byUser.set(r.user, (l = []));
    l.push(r);
  }
  const gap = s.idleMinutes * 60_000, day = 86_400_000;
  for (const [user, l] of byUser) {
    l.sort((a, b) => a.time - b.time);
    let n = 0, inSession = 0;
    for (let i = 0; i < l.length; i++) {
      const r = l[i]!;
      if (i > 0) {
        const prev = l[i - 1]!.time;
        const split = s.by === 'day' ? Math.floor(r.time / day) !== Math.floor(prev / day) : r.time - prev > gap;
        if (split || inSession >= s.maxItems) { n++; inSession = 0; }
      }
      r.basket = `${user}#${n}`;
      inSession++;
    }
  }
}

/**
 * Group cleaned rows into baskets, split by time (the last `split.testDays` days are the test period, the
 * `split.validDays` before them the validation period), index the catalog from training (validation included),
 * and pick the hidden item of each test and validation basket with `seed`. An evaluated basket keeps only catalog
 * items (an item never seen in training cannot be recommended) and needs >= 2 of them. Duplicate lines of one
 * item in a basket count once.
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
  const validCut = cutoff - cfg.split.validDays * dayMs;
  const trainB = baskets.filter((b) => b.time < cutoff);
  const testB = baskets.filter((b) => b.time >= cutoff);
  const fitCount = trainB.filter((b) => b.time < validCut).length;
  if (fitCount === 0) throw Errors.data(cfg.name, `split.testDays=${cfg.split.testDays} and validDays=${cfg.split.validDays} leave no training ${cfg.words.baskets}`);

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
  /** Hide one item of every basket with >= 2 catalog items; `knownUser` tells which users have a training row. */
  const hide = (list: B[], knownUser: (u: number) => boolean): { set: TestBaskets; cold: number } => {
    const hidden: number[] = [];
    const out: { user: number; time: number; items: number[] }[] = [];
    let cold = 0;
    for (const b of list) {
      const items = b.items.map((it) => itemIds.get(it)).filter((x): x is number => x !== undefined);
      if (items.length < 2) continue;
      const h = rng.int(items.length);
      hidden.push(items[h]!);
      items.splice(h, 1);
      let user = userIds.get(b.user) ?? 0;
      if (!knownUser(user)) user = 0;
      if (user === 0) cold++;
      out.push({ user, time: b.time, items });
    }
    return { set: { ...pack(out), hidden: Int32Array.from(hidden) }, cold };
  };
  const test = hide(testB, () => true);
  // Validation users are known if they have a basket before the validation period (what the fit part trains).
  const fitUsers = new Set<number>();
  for (let b = 0; b < fitCount; b++) fitUsers.add(train.users[b]!);
  const valid = hide(trainB.slice(fitCount), (u) => fitUsers.has(u));
  const day = (t: number): string => new Date(t).toISOString().slice(0, 10);
  return {
    name: cfg.name,
    attribution: cfg.attribution,
    words: cfg.words,
    numItems: itemKeys.length,
    numUsers: userKeys.length,
    itemKeys,
    itemNames: itemKeys.map((k) => names.get(k) ?? ''),
    userKeys,
    train,
    fitBaskets: fitCount,
    valid: valid.set,
    test: test.set,
    stats: {
      ...stats, baskets: baskets.length, trainBaskets: trainB.length, fitBaskets: fitCount, validBaskets: valid.set.hidden.length,
      testPeriodBaskets: testB.length, testBaskets: test.set.hidden.length, testColdUsers: test.cold, cutoff: day(cutoff),
      validFrom: day(validCut), firstDay: day(first), lastDay: day(last),
    },
  };
}

/** Baskets [from, to) of `b` as their own Baskets (views, no copy of the items). */
export function sliceBaskets(b: Baskets, from: number, to: number): Baskets {
  const s = b.offsets[from]!;
  return { offsets: b.offsets.slice(from, to + 1).map((o) => o - s), items: b.items.subarray(s, b.offsets[to]!), users: b.users.subarray(from, to), times: b.times.subarray(from, to) };
}

function fileKey(path: string): { path: string; size: number; mtime: number } {
  if (!existsSync(path)) throw Errors.data(path, 'data file not found');
  const st = statSync(path);
  return { path, size: st.size, mtime: st.mtimeMs };
}

const arrays = ['offsets', 'items', 'users', 'times', 'hidden'] as const;
function toJson(p: Prepared): string {
  const enc = (b: Baskets | TestBaskets): Record<string, unknown> =>
    Object.fromEntries(arrays.filter((k) => k in b).map((k) => [k, Array.from((b as TestBaskets)[k])]));
  const lists = (l: TokenLists): Record<string, number[]> => ({ offsets: Array.from(l.offsets), ids: Array.from(l.ids) });
  const features = p.features ? { names: p.features.names, item: lists(p.features.item), user: lists(p.features.user) } : undefined;
  return JSON.stringify({ ...p, train: enc(p.train), valid: enc(p.valid), test: enc(p.test), features });
}
function fromJson(s: string): Prepared {
  const o = JSON.parse(s) as Prepared & { train: Record<string, number[]>; valid: Record<string, number[]>; test: Record<string, number[]> };
  const dec = (b: Record<string, number[]>): TestBaskets => ({
    offsets: Int32Array.from(b.offsets!), items: Int32Array.from(b.items!), users: Int32Array.from(b.users!),
    times: Float64Array.from(b.times!), hidden: Int32Array.from(b.hidden ?? []),
  });
  const f = o.features as unknown as { names: string[]; item: Record<string, number[]>; user: Record<string, number[]> } | undefined;
  const lists = (l: Record<string, number[]>): TokenLists => ({ offsets: Int32Array.from(l.offsets!), ids: Int32Array.from(l.ids!) });
  const features = f ? { features: { names: f.names, item: lists(f.item), user: lists(f.user) } } : {};
  const { features: _raw, ...rest } = o;
  return { ...rest, train: dec(o.train), valid: dec(o.valid), test: dec(o.test), ...features };
}

/**
 * Prepare the task for `cfg`, cached in `cacheDir` under a key of the config, the seed and the data files' sizes
 * and mtimes (a changed file or config rebuilds). Returns the task and whether it came from the cache.
 */
export async function prepare(cfg: DatasetConfig, baseDir: string, cacheDir: string, seed = 1): Promise<{ data: Prepared; cached: boolean; path: string; ms: number }> {
  const t0 = Date.now();
  const files = [cfg.interactions.file, ...[cfg.itemNames, cfg.itemFeatures, cfg.userFeatures].flatMap((x) => (x ? [x.file] : []))].map((f) => fileKey(isAbsolute(f) ? f : resolve(baseDir, f)));
  const key = createHash('sha1').update(JSON.stringify({ cfg, seed, files, v: 2 })).digest('hex').slice(0, 12);
  const path = join(cacheDir, `${cfg.name}-${key}.json`);
  if (existsSync(path)) return { data: fromJson(readFileSync(path, 'utf8')), cached: true, path, ms: Date.now() - t0 };
  const { rows, stats } = await cleanRows(cfg, baseDir);
  const data = buildTask(rows, stats, cfg, seed);
  const features = await buildFeatures(cfg, baseDir, data);
  if (features) data.features = features;
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
