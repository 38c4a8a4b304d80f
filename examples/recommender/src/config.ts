import { Errors } from '@shoal/core';

/**
 * How a transaction (or rating) log maps onto the basket-completion task. A second data set needs only a new
 * config of this shape (a JSON file passed with `--config`), no code change. See examples/recommender/README.md.
 */
export interface DatasetConfig {
  /** Short name used in cache folders and reports. */
  name: string;
  /** CSV or gzip'd CSV (`.gz`), with a header row. Relative paths resolve against the config file's folder. */
  file: string;
  /** Attribution line printed in reports. */
  attribution?: string;
  columns: {
    /** Customer / user id. */
    user: string;
    /** Item / product id. */
    item: string;
    /** Basket, invoice, order or session id: the items bought together. */
    basket: string;
    /** Event time; see `timestampFormat`. */
    timestamp: string;
    /** Optional quantity column; rows with quantity < `filters.minQuantity` are dropped. */
    quantity?: string;
    /** Optional human-readable item name, for reports. */
    itemName?: string;
  };
  /** `datetime`: `YYYY-MM-DD HH:MM[:SS]` or ISO 8601 (read as UTC); `unix-s` / `unix-ms`: numbers. */
  timestampFormat: 'datetime' | 'unix-s' | 'unix-ms';
  filters: {
    /** Drop rows whose user is empty (no customer history to learn from). */
    dropEmptyUser: boolean;
    /** Drop rows whose basket id starts with this prefix (cancellations, returns). */
    cancelledBasketPrefix?: string;
    /** Drop rows with quantity below this (needs `columns.quantity`). */
    minQuantity?: number;
    /** Keep only items whose id matches this regular expression (drops fees, postage, ...). */
    itemPattern?: string;
  };
  split: {
    /** The last `testDays` days (by timestamp) form the test period; everything before is training. */
    testDays: number;
  };
}

/** The shipped Online Retail copy (UCI id 352), cleaned as its SOURCE.md says. */
export const ONLINE_RETAIL: DatasetConfig = {
  name: 'online-retail',
  file: 'data/online-retail/online_retail_all.csv.gz',
  attribution: 'Online Retail (UCI ML Repository id 352), D. Chen, S. L. Sain, K. Guo (2012); CC BY 4.0',
  columns: {
    user: 'CustomerID', item: 'StockCode', basket: 'InvoiceNo', timestamp: 'InvoiceDate',
    quantity: 'Quantity', itemName: 'Description',
  },
  timestampFormat: 'datetime',
  filters: { dropEmptyUser: true, cancelledBasketPrefix: 'C', minQuantity: 1, itemPattern: '^\\d{5}[A-Za-z]{0,2}$' },
  split: { testDays: 28 },
};

/** Check a parsed config object; throws ERR_CONFIG naming the bad key. Returns it typed. */
export function validateConfig(raw: unknown, where = 'config'): DatasetConfig {
  const o = raw as Record<string, unknown> | null;
  if (o === null || typeof o !== 'object') throw Errors.config(where, 'must be a JSON object');
  const str = (v: unknown, key: string): string => {
    if (typeof v !== 'string' || v === '') throw Errors.config(`${where}.${key}`, `must be a non-empty string, got ${JSON.stringify(v)}`);
    return v;
  };
  str(o.name, 'name');
  str(o.file, 'file');
  const cols = o.columns as Record<string, unknown> | undefined;
  if (cols === undefined || typeof cols !== 'object') throw Errors.config(`${where}.columns`, 'is required (user, item, basket, timestamp)');
  for (const k of ['user', 'item', 'basket', 'timestamp']) str(cols[k], `columns.${k}`);
  for (const k of ['quantity', 'itemName']) if (cols[k] !== undefined) str(cols[k], `columns.${k}`);
  if (!['datetime', 'unix-s', 'unix-ms'].includes(o.timestampFormat as string)) {
    throw Errors.config(`${where}.timestampFormat`, `must be datetime|unix-s|unix-ms, got ${JSON.stringify(o.timestampFormat)}`);
  }
  const f = o.filters as Record<string, unknown> | undefined;
  if (f === undefined || typeof f !== 'object' || typeof f.dropEmptyUser !== 'boolean') {
    throw Errors.config(`${where}.filters.dropEmptyUser`, 'must be a boolean');
  }
  if (f.minQuantity !== undefined) {
    if (typeof f.minQuantity !== 'number') throw Errors.config(`${where}.filters.minQuantity`, 'must be a number');
    if (cols.quantity === undefined) throw Errors.config(`${where}.filters.minQuantity`, 'needs columns.quantity');
  }
  if (f.itemPattern !== undefined) {
    try { new RegExp(str(f.itemPattern, 'filters.itemPattern')); } catch (e) {
      throw Errors.config(`${where}.filters.itemPattern`, `is not a valid regular expression: ${(e as Error).message}`);
    }
  }
  if (f.cancelledBasketPrefix !== undefined) str(f.cancelledBasketPrefix, 'filters.cancelledBasketPrefix');
  const s = o.split as Record<string, unknown> | undefined;
  if (s === undefined || typeof s.testDays !== 'number' || !(s.testDays > 0)) {
    throw Errors.config(`${where}.split.testDays`, 'must be a positive number of days');
  }
  return o as unknown as DatasetConfig;
}
