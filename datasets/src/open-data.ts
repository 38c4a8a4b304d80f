import { readdir, stat } from 'node:fs/promises';
import { Errors } from '@shoal/core';
import { openArrowFile } from './arrow-file.js';
import { openCsv, type CsvSchema } from './csv.js';
import { openParquetDir } from './parquet-dir.js';
import type { Dataset } from './types.js';

/**
 * Open a file or folder of training data by what it holds: Parquet (`*.parquet`, Spark's `part-*` files, Hive
 * partition folders), Arrow IPC files (`*.arrow`, `*.feather`, `*.ipc`) or CSV (`*.csv`, with a header). CSV has
 * no types of its own: the `csvColumns` are read as float32 (the others are not read).
 *
 * Errors: ERR_DATA naming the path when it does not exist, holds none of these, or mixes several kinds.
 */
export async function openData(path: string, csvColumns: readonly string[] = []): Promise<Dataset> {
  let st;
  try {
    st = await stat(path);
  } catch (e) {
    throw Errors.data(path, `cannot open: ${(e as Error).message}`);
  }
  const kinds = new Set<string>();
  const add = (name: string) => {
    const n = name.toLowerCase();
    if (n.startsWith('.') || n.startsWith('_') || n.endsWith('.crc')) return;
    if (n.endsWith('.arrow') || n.endsWith('.feather') || n.endsWith('.ipc')) kinds.add('arrow');
    else if (n.endsWith('.csv')) kinds.add('csv');
    else if (n.endsWith('.parquet') || n.startsWith('part-')) kinds.add('parquet'); // Spark: part-00000-<uuid>.snappy.parquet
  };
  if (st.isDirectory()) {
    for (const e of await readdir(path, { withFileTypes: true })) {
      // Hive partition folders (`key=value`) hold Parquet.
      if (e.isDirectory() && e.name.includes('=')) kinds.add('parquet');
      else if (e.isFile()) add(e.name);
    }
  } else add(path.split('/').pop()!);
  if (kinds.size === 0) throw Errors.data(path, 'holds no Parquet (*.parquet), Arrow (*.arrow, *.feather, *.ipc) or CSV (*.csv) files');
  if (kinds.size > 1) throw Errors.data(path, `mixes ${[...kinds].sort().join(' and ')} files; keep one kind per folder`);
  const kind = [...kinds][0]!;
  if (kind === 'parquet') return openParquetDir(path);
  if (kind === 'arrow') return openArrowFile(path);
  if (csvColumns.length === 0) throw Errors.invalidArg('csvColumns', `must name the columns to read from the CSV files in ${path}`);
  const schema: CsvSchema = Object.fromEntries(csvColumns.map((c) => [c, 'float32']));
  return openCsv(path, schema);
}
