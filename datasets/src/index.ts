/**
 * @shoal/datasets: each worker reads its own Spark partitions where Spark keeps them.
 *
 *   const ds = await openParquetDir('/data/events');           // or openArrowStream(process.stdin), openArrowFile, openCsv
 *   const mine = shard(ds, rank, size);                         // deterministic assignment, see shard.ts
 *   const steps = await syncSteps(localSteps(mine, 256), allgather, 'wrap');
 *   for await (const b of batches(mine, { features: ['features'], label: 'label', batchSize: 256,
 *                                         shuffle: { seed: 7, buffer: 10_000 }, epoch, steps })) { ... }
 *   await ds.close();
 */
export type { ColumnKind, NumericArray, FieldInfo, DatasetSchema, Column, Chunk, ReadOptions, Partition, Dataset } from './types.js';
export { fieldOf } from './types.js';
export { openArrowStream, type ArrowStreamSource, type ArrowStreamOptions } from './arrow-stream.js';
export { openArrowFile } from './arrow-file.js';
export { openParquetDir, type ParquetDirOptions } from './parquet-dir.js';
export { verifyPageChecksums, bytesSource, blobSource, type ByteSource, type VerifyScope } from './parquet-crc.js';
export { openCsv, type CsvSchema, type CsvOptions, type CsvColumnType } from './csv.js';
export { cached } from './cached.js';
export {
  shard,
  assignPartitions,
  shardRows,
  localSteps,
  agreeSteps,
  syncSteps,
  type Shard,
  type AssignPolicy,
  type StepsPolicy,
} from './shard.js';
export { batches, type Batch, type BatchArray, type BatchOptions } from './batches.js';
export { openData } from './open-data.js';
export {
  trainingData,
  isTrainingData,
  VALIDATION_COLUMN,
  type TrainingData,
  type TrainingDataOptions,
  type ValidationRows,
  type ExchangeVectors,
} from './training-data.js';
