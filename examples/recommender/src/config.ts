import { readFileSync } from 'node:fs';
import { Errors } from '@shoal/core';

/**
 * How an interaction log maps onto the basket-completion task. A new data set needs only a JSON file of this
 * shape (`--config`), checked against `config.schema.json` (the single source of the keys, their types and
 * defaults) and documented key by key in examples/recommender/README.md.
 */
export type ColumnRef = string | number;

/** Where a table comes from: a file and its CSV dialect. */
export interface TableSource {
  file: string;
  delimiter: string;
  quote: string | null;
  header: boolean;
}

/** A side file of categorical features: `separator` splits one field into several values (null: one value). */
export interface FeatureSource extends TableSource { separator: string | null }

export interface Words { basket: string; baskets: string; user: string; users: string; item: string; items: string }

export interface DatasetConfig {
  name: string;
  attribution: string;
  words: Words;
  interactions: TableSource & {
    columns: { user: ColumnRef; item: ColumnRef; timestamp: ColumnRef; basket?: ColumnRef; quantity?: ColumnRef; rating?: ColumnRef; itemName?: ColumnRef };
  };
  timestamp: { format: 'iso' | 'unix-s' | 'unix-ms' | 'pattern'; pattern?: string };
  feedback: { minRating?: number };
  sessions: { by: 'column' | 'idle-gap' | 'day'; idleMinutes: number; maxItems: number };
  filters: { dropEmptyUser: boolean; cancelledBasketPrefix?: string; minQuantity?: number; itemPattern?: string };
  itemNames?: TableSource & { columns: { item: ColumnRef; name: ColumnRef } };
  /** Optional categorical features of items / users from side files (README "Features"). */
  itemFeatures?: FeatureSource & { columns: { item: ColumnRef; features: ColumnRef[] } };
  userFeatures?: FeatureSource & { columns: { user: ColumnRef; features: ColumnRef[] } };
  split: { testDays: number; validDays: number };
}

/** The JSON schema shipped beside the package (examples/recommender/config.schema.json). */
export const CONFIG_SCHEMA_PATH = new URL('../config.schema.json', import.meta.url);

interface SchemaNode {
  type?: string | string[];
  enum?: unknown[];
  properties?: Record<string, SchemaNode>;
  required?: string[];
  additionalProperties?: boolean;
  default?: unknown;
  minLength?: number;
  minimum?: number;
  exclusiveMinimum?: number;
}

let schemaCache: SchemaNode | null = null;
function schema(): SchemaNode {
  schemaCache ??= JSON.parse(readFileSync(CONFIG_SCHEMA_PATH, 'utf8')) as SchemaNode;
  return schemaCache;
}

const typeOf = (v: unknown): string =>
  v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v === 'number' ? (Number.isInteger(v) ? 'integer' : 'number') : typeof v;

/**
 * Check `v` against the schema node and fill in defaults (returns a new value). Supports the keywords the
 * schema uses: type, enum, properties, required, additionalProperties: false, default, minLength, minimum,
 * exclusiveMinimum. Throws ERR_CONFIG naming the key path.
 */
function check(node: SchemaNode, v: unknown, path: string, where: string): unknown {
  const key = path === '' ? '(top level)' : path;
  const bad = (msg: string): never => { throw Errors.config(`${where}: ${key}`, msg); };
  if (node.enum && !node.enum.includes(v)) bad(`must be one of ${node.enum.map((x) => JSON.stringify(x)).join(', ')}, got ${JSON.stringify(v)}`);
  if (node.type !== undefined) {
    const types = Array.isArray(node.type) ? node.type : [node.type];
    const t = typeOf(v);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) bad(`must be ${types.join(' or ')}, got ${JSON.stringify(v)}`);
  }
  if (typeof v === 'string' && node.minLength !== undefined && v.length < node.minLength) bad('must not be empty');
  if (typeof v === 'number') {
    if (node.minimum !== undefined && v < node.minimum) bad(`must be >= ${node.minimum}, got ${v}`);
    if (node.exclusiveMinimum !== undefined && !(v > node.exclusiveMinimum)) bad(`must be > ${node.exclusiveMinimum}, got ${v}`);
  }
  if (node.properties && typeOf(v) === 'object') {
    const o = v as Record<string, unknown>;
    const out: Record<string, unknown> = {};
    for (const r of node.required ?? []) if (o[r] === undefined) throw Errors.config(`${where}: ${path ? `${path}.` : ''}${r}`, 'is required');
    for (const k of Object.keys(o)) {
      if (!(k in node.properties) && node.additionalProperties === false) {
        throw Errors.config(`${where}: ${path ? `${path}.` : ''}${k}`, `is not a known key (known: ${Object.keys(node.properties).filter((x) => x !== '$schema').join(', ')})`);
      }
    }
    for (const [k, sub] of Object.entries(node.properties)) {
      const val = o[k] !== undefined ? o[k] : sub.default !== undefined ? structuredClone(sub.default) : undefined;
      if (val !== undefined) out[k] = check(sub, val, path ? `${path}.${k}` : k, where);
    }
    return out;
  }
  return v;
}

function checkRegExp(re: string, key: string, where: string): void {
  try { new RegExp(re); } catch (e) { throw Errors.config(`${where}: ${key}`, `is not a valid regular expression: ${(e as Error).message}`); }
}

/** Column references must be names with a header and 0-based positions without one. */
function checkColumns(cols: Record<string, ColumnRef>, header: boolean, key: string, where: string): void {
  for (const [k, c] of Object.entries(cols)) {
    if (header && typeof c !== 'string') throw Errors.config(`${where}: ${key}.${k}`, `is ${c}: with a header line, name the column (or set header: false to use positions)`);
    if (!header && (typeof c !== 'number' || c < 0)) throw Errors.config(`${where}: ${key}.${k}`, `is ${JSON.stringify(c)}: without a header line, give the 0-based field position`);
  }
}

/** Check a parsed config object, fill in the defaults and return it typed; throws ERR_CONFIG naming the bad key. */
export function validateConfig(raw: unknown, where = 'config'): DatasetConfig {
  if (typeOf(raw) !== 'object') throw Errors.config(where, 'must be a JSON object');
  const c = check(schema(), raw, '', where) as DatasetConfig & { words: Partial<Words>; $schema?: string };
  delete c.$schema;
  const i = c.interactions;
  checkColumns(i.columns as Record<string, ColumnRef>, i.header, 'interactions.columns', where);
  if (c.itemNames) checkColumns(c.itemNames.columns, c.itemNames.header, 'itemNames.columns', where);
  for (const [k, f] of [['itemFeatures', c.itemFeatures], ['userFeatures', c.userFeatures]] as const) {
    if (!f) continue;
    const cols = f.columns as { features: unknown; [id: string]: unknown };
    if (!Array.isArray(cols.features) || cols.features.length === 0) throw Errors.config(`${where}: ${k}.columns.features`, `must be a non-empty list of columns, got ${JSON.stringify(cols.features)}`);
    const named: Record<string, ColumnRef> = {};
    for (const [id, v] of Object.entries(cols)) if (id !== 'features') named[id] = v as ColumnRef;
    (cols.features as unknown[]).forEach((v, n) => {
      if (typeof v !== 'string' && !(typeof v === 'number' && Number.isInteger(v))) throw Errors.config(`${where}: ${k}.columns.features[${n}]`, `must be a column name or position, got ${JSON.stringify(v)}`);
      named[`features[${n}]`] = v;
    });
    checkColumns(named, f.header, `${k}.columns`, where);
    if (f.separator === '') throw Errors.config(`${where}: ${k}.separator`, 'must not be empty (null: one value per field)');
  }
  for (const [k, s] of [['interactions', i], ['itemNames', c.itemNames], ['itemFeatures', c.itemFeatures], ['userFeatures', c.userFeatures]] as const) {
    if (s && s.quote !== null && (s.quote.length !== 1 || s.delimiter.includes(s.quote))) {
      throw Errors.config(`${where}: ${k}.quote`, `must be one character not in the delimiter (or null), got ${JSON.stringify(s.quote)}`);
    }
    if (s && /[\r\n]/.test(s.delimiter)) throw Errors.config(`${where}: ${k}.delimiter`, 'must not contain a line break');
  }
  if (c.timestamp.format === 'pattern') {
    if (c.timestamp.pattern === undefined) throw Errors.config(`${where}: timestamp.pattern`, 'is required with format "pattern"');
    compilePattern(c.timestamp.pattern, `${where}: timestamp.pattern`);
  } else if (c.timestamp.pattern !== undefined) throw Errors.config(`${where}: timestamp.pattern`, `needs format "pattern" (format is ${JSON.stringify(c.timestamp.format)})`);
  if (c.feedback.minRating !== undefined && i.columns.rating === undefined) throw Errors.config(`${where}: feedback.minRating`, 'needs interactions.columns.rating');
  if (c.filters.minQuantity !== undefined && i.columns.quantity === undefined) throw Errors.config(`${where}: filters.minQuantity`, 'needs interactions.columns.quantity');
  if (c.filters.itemPattern !== undefined) checkRegExp(c.filters.itemPattern, 'filters.itemPattern', where);
  const by = (c.sessions as { by?: DatasetConfig['sessions']['by'] }).by ?? (i.columns.basket !== undefined ? 'column' : 'idle-gap');
  if (by === 'column' && i.columns.basket === undefined) throw Errors.config(`${where}: sessions.by`, 'is "column" but interactions.columns.basket is not set (use "idle-gap" or "day")');
  if (c.filters.cancelledBasketPrefix !== undefined && by !== 'column') throw Errors.config(`${where}: filters.cancelledBasketPrefix`, 'needs basket ids (sessions.by "column")');
  c.sessions = { ...c.sessions, by };
  const w = c.words;
  c.words = { basket: w.basket!, baskets: w.baskets ?? `${w.basket}s`, user: w.user!, users: w.users ?? `${w.user}s`, item: w.item!, items: w.items ?? `${w.item}s` };
  c.split = { testDays: c.split.testDays, validDays: c.split.validDays ?? c.split.testDays };
  return c;
}

/** Read and check a config file. */
export function loadConfig(path: string): DatasetConfig {
  let raw: unknown;
  try { raw = JSON.parse(readFileSync(path, 'utf8')); } catch (e) {
    throw Errors.config(path, (e as NodeJS.ErrnoException).code === 'ENOENT' ? 'file not found' : `is not valid JSON: ${(e as Error).message}`);
  }
  return validateConfig(raw, path);
}

/** The shipped Online Retail copy (UCI id 352), cleaned as its SOURCE.md says. */
export const ONLINE_RETAIL: DatasetConfig = validateConfig({
  name: 'online-retail',
  attribution: 'Online Retail (UCI ML Repository id 352), D. Chen, S. L. Sain, K. Guo (2012); CC BY 4.0',
  words: { basket: 'invoice', user: 'customer', item: 'product' },
  interactions: {
    file: 'data/online-retail/online_retail_all.csv.gz',
    columns: { user: 'CustomerID', item: 'StockCode', basket: 'InvoiceNo', timestamp: 'InvoiceDate', quantity: 'Quantity', itemName: 'Description' },
  },
  timestamp: { format: 'iso' },
  filters: { dropEmptyUser: true, cancelledBasketPrefix: 'C', minQuantity: 1, itemPattern: '^\\d{5}[A-Za-z]{0,2}$' },
  split: { testDays: 28 },
}, 'online-retail (built in)');

/** Tokens of a timestamp pattern, longest first. */
const TOKENS = ['YYYY', 'MM', 'DD', 'HH', 'mm', 'ss', 'M', 'D', 'H'] as const;

/** Compile a pattern like `DD/MM/YYYY HH:mm` into a parser returning ms since the epoch (UTC), NaN if no match. */
export function compilePattern(pattern: string, where: string): (s: string) => number {
  let re = '^';
  const fields: string[] = [];
  for (let k = 0; k < pattern.length;) {
    const tok = TOKENS.find((t) => pattern.startsWith(t, k));
    if (tok) {
      re += tok.length === 1 ? '(\\d{1,2})' : `(\\d{${tok.length}})`;
      fields.push(tok);
      k += tok.length;
    } else {
      re += pattern[k]!.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
      k++;
    }
  }
  if (!fields.includes('YYYY') || !(fields.includes('MM') || fields.includes('M')) || !(fields.includes('DD') || fields.includes('D'))) {
    throw Errors.config(where, `${JSON.stringify(pattern)} needs YYYY, MM (or M) and DD (or D)`);
  }
  const rx = new RegExp(`${re}$`);
  return (s: string): number => {
    const m = rx.exec(s.trim());
    if (!m) return NaN;
    const v: Record<string, number> = { YYYY: 1970, MM: 1, DD: 1, HH: 0, mm: 0, ss: 0 };
    fields.forEach((f, i) => { v[f.length === 1 ? f + f : f] = Number(m[i + 1]); });
    const { YYYY: y, MM: mo, DD: d, HH: h, mm: mi, ss: sec } = v as Record<string, number>;
    if (!(mo! >= 1 && mo! <= 12 && d! >= 1 && d! <= 31 && h! < 24 && mi! < 60 && sec! < 61)) return NaN;
    return Date.UTC(y!, mo! - 1, d!, h!, mi!, sec!);
  };
}

/** A parser of the configured timestamp format: text -> ms since the epoch (UTC), NaN when unreadable. */
export function timestampParser(t: DatasetConfig['timestamp']): (s: string) => number {
  switch (t.format) {
    case 'unix-s': return (s) => (/^\s*-?\d+(\.\d+)?\s*$/.test(s) ? Number(s) * 1000 : NaN);
    case 'unix-ms': return (s) => (/^\s*-?\d+(\.\d+)?\s*$/.test(s) ? Number(s) : NaN);
    case 'pattern': return compilePattern(t.pattern!, 'timestamp.pattern');
    default: return (raw) => {
      const s = raw.length >= 16 && raw[10] === ' ' ? `${raw.slice(0, 10)}T${raw.slice(11)}` : raw;
      if (!/^\d{4}-\d{2}-\d{2}/.test(s)) return NaN;
      return Date.parse(/[zZ]|[+-]\d\d:?\d\d$/.test(s) || s.length <= 10 ? s : `${s}Z`);
    };
  }
}
