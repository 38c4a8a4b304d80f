/**
 * A training worker's data side, run as its own process by the datasets-*.test.ts files:
 *   node datasets-worker.js stdin <batchSize>                      reads an Arrow IPC stream from stdin
 *   node datasets-worker.js parquet <dir> <rank> <size> <bs> [steps]   reads its shard of a Parquet directory
 * Prints one JSON line: { rows, batches, localSteps, ids (sorted) } or { error, code } and exits 1.
 */
import { isShoalError } from '@shoal/core';
import { batches, localSteps, openArrowStream, openParquetDir, shard } from '@shoal/datasets';

async function main(argv: string[]): Promise<void> {
  const [mode] = argv;
  if (mode === 'stdin') {
    const bs = Number(argv[1]);
    const ds = await openArrowStream(process.stdin, { name: 'stdin', idleTimeoutMs: 60_000 });
    let rows = 0;
    let n = 0;
    let labelSum = 0;
    for await (const b of batches(ds, { features: ['features'], label: 'label', columns: ['id'], batchSize: bs })) {
      rows += b.size;
      n++;
      for (let i = 0; i < b.size; i++) labelSum += b.columns.label![i]!;
    }
    console.log(JSON.stringify({ rows, batches: n, labelSum }));
    return;
  }
  const [, dir, rank, size, bs, steps] = argv;
  const ds = await openParquetDir(dir!, { granularity: 'rowGroup', threads: 0 });
  try {
    const mine = shard(ds, Number(rank), Number(size));
    const local = localSteps(mine, Number(bs));
    const ids: number[] = [];
    let n = 0;
    const opts = { columns: ['id'], batchSize: Number(bs), shuffle: { seed: 11, buffer: 64 }, ...(steps ? { steps: Number(steps) } : {}) };
    for await (const b of batches(mine, opts)) {
      ids.push(...b.columns.id!);
      n++;
    }
    console.log(JSON.stringify({ rows: ids.length, batches: n, localSteps: local, ids: ids.sort((a, b) => a - b) }));
  } finally {
    await ds.close();
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (e: unknown) => {
    console.log(JSON.stringify({ error: e instanceof Error ? e.message : String(e), code: isShoalError(e) ? e.code : undefined }));
    process.exit(1);
  },
);
