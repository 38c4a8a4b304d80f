/**
 * A real training worker for the Spark launcher tests and the `spark` benchmark (not a test file itself): an MLP
 * (64-32-10, seeded init, plain SGD) on the digits set, data-parallel over the job's ranks with the Trainer.
 *
 * Input, one of:
 *   - stdin (`SHOAL_INPUT=stdin`, what shoal_spark.run sets): this rank's Spark partition as an Arrow IPC stream;
 *   - `--parquet DIR`: a Spark-written Parquet directory (the Petastorm/Horovod path, run with `shoal run`); rank r
 *     reads its shard of the part files (`shard(ds, rank, size)`; with one part file per rank, part r).
 * Columns: `p0..p63` (pixels scaled to 0..1) and `label` (0..9). Batches come in the partition's row order (no
 * shuffle), so a Spark run and a `shoal run` over the same partitions see identical batches.
 *
 *   node test/dist/spark-digits-worker.js [--parquet DIR] [--epochs 3] [--batch-size 32] [--lr 0.1] [--out FILE]
 *
 * Every rank agrees the steps per epoch (`min` of the local counts). Rank 0 prints
 * `SHOAL_RESULT {"loss", "accuracy", "epochs", "steps", "rows", "out"}` and with --out writes
 * `{ weights: number[] }` (the flat model weights) to FILE.
 */
import { writeFile } from 'node:fs/promises';
import type * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import { initWorker, sparkInput } from '@shoal/run';
import { batches, localSteps, openArrowStream, openParquetDir, shard, syncSteps, type Dataset } from '@shoal/datasets';
import { setupTfjs, Trainer, type Tf } from '@shoal/wrappers';

const FEATURES = Array.from({ length: 64 }, (_, i) => `p${i}`);

function arg(name: string, dflt?: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

function buildModel(tf: Tf): tfjs.LayersModel {
  const init = (k: number) => tf.initializers.glorotUniform({ seed: 1000 + k });
  return tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [64], units: 32, activation: 'relu', kernelInitializer: init(1) }),
      tf.layers.dense({ units: 10, activation: 'softmax', kernelInitializer: init(2) }),
    ],
  });
}

async function main(): Promise<void> {
  const epochs = Number(arg('epochs', '3'));
  const batchSize = Number(arg('batch-size', '32'));
  const lr = Number(arg('lr', '0.1'));
  const parquet = arg('parquet');
  const out = arg('out');
  const worker = await initWorker();
  const { rank, worldSize } = worker.options;
  let ds: Dataset | undefined;
  try {
    const t0 = performance.now();
    if (parquet) ds = await openParquetDir(parquet);
    else if (process.env.SHOAL_INPUT === 'stdin') ds = await openArrowStream(sparkInput(), { name: `rank ${rank} stdin`, retain: true });
    else throw Errors.config('SHOAL_INPUT', 'is not stdin and no --parquet DIR was given: where is the data?');
    // A live stream's row count is known once it has been read: drain it into memory (retained for every epoch).
    if (!parquet) for await (const _ of ds.partitions[0]!.read({ columns: [] })) void _;
    const mine = parquet ? shard(ds, rank, worldSize) : shard(ds, 0, 1);
    const local = localSteps(mine, batchSize, true);
    const steps = await syncSteps(
      local,
      async (n) => {
        const v = new Float64Array(worldSize);
        v[rank] = n;
        const mean = await worker.sync.allreduceScalars(v);
        return Array.from(mean, (m) => Math.round(m * worldSize));
      },
      'min',
    );
    if (steps < 1) throw Errors.data(ds.source, `rank ${rank}: agreed ${steps} steps per epoch (a shard has fewer than ${batchSize} rows)`);

    const rt = await setupTfjs();
    const tf = rt.tf;
    let rows = 0;
    const trainer = new Trainer({
      model: (t) => buildModel(t),
      optimizer: (t) => t.train.sgd(lr),
      loss: 'sparseCategoricalCrossentropy',
      metrics: ['accuracy'],
      sync: worker.sync,
      runtime: rt,
      verbose: 0,
    });
    const history = await trainer.fit(
      {
        async *batches(ctx) {
          for await (const b of batches(mine, { features: FEATURES, label: 'label', batchSize, epoch: ctx.epoch, steps, dropRemainder: true })) {
            rows += b.size;
            const y = b.columns.label!;
            yield {
              x: tf.tensor2d(b.columns.features! as Float32Array, [b.size, 64]),
              y: tf.tensor1d(y instanceof Float32Array ? y : Float32Array.from(y), 'float32'),
            };
          }
        },
      },
      { epochs, batchSize, stepsPerEpoch: steps },
    );
    const last = history.epochs[history.epochs.length - 1]!;
    const weights = Array.from(trainer.weightsFlat());
    if (rank === 0) {
      if (out) await writeFile(out, JSON.stringify({ weights }));
      const result = { firstLoss: history.epochs[0]!.loss, loss: last.loss, accuracy: last.accuracy, epochs, steps, rows, out: out ?? null, seconds: (performance.now() - t0) / 1000 };
      process.stdout.write(`SHOAL_RESULT ${JSON.stringify(result)}\n`);
    }
    process.stderr.write(`rank ${rank}: ${steps} steps/epoch x ${epochs} epochs, ${rows} rows trained, loss ${last.loss?.toFixed(5)}\n`);
    await trainer.close();
  } finally {
    await ds?.close();
    await worker.close();
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`spark-digits-worker: ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}\n`);
    process.exit(1);
  },
);
