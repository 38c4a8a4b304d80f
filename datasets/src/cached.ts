/**
 * Keep decoded partitions in memory so epochs after the first skip reading and decoding. Worth it when the
 * decoded shard fits in memory (the Online Retail CSVs decode to a few MB per column): CSV and Parquet decode cost
 * far more than replaying typed arrays.
 */
import type { Chunk, Dataset, Partition, ReadOptions } from './types.js';

class CachedPartition implements Partition {
  /** Column-set key -> the chunks of a complete read. */
  private readonly cache = new Map<string, Chunk[]>();
  constructor(private readonly inner: Partition) {}
  get name(): string {
    return this.inner.name;
  }
  get rows(): number | undefined {
    return this.inner.rows;
  }
  async *read(ro: ReadOptions): AsyncGenerator<Chunk> {
    const key = JSON.stringify([...ro.columns].sort());
    const hit = this.cache.get(key);
    if (hit) {
      yield* hit;
      return;
    }
    const got: Chunk[] = [];
    for await (const c of this.inner.read(ro)) {
      got.push(c);
      yield c;
    }
    // Only a read that reached its end is kept (an abandoned or failed read is not a whole partition).
    this.cache.set(key, got);
  }
}

/**
 * A view of `dataset` whose partitions remember every complete read, per set of columns. Memory: the decoded
 * size of each partition read (per distinct column set), held until the returned dataset is dropped.
 * Chunks are shared between epochs, so consumers must not write to batch arrays (they are read-only anyway).
 * `close()` closes the underlying dataset.
 */
export function cached(dataset: Dataset): Dataset {
  return {
    source: dataset.source,
    schema: dataset.schema,
    partitions: dataset.partitions.map((p) => new CachedPartition(p)),
    close: () => dataset.close(),
  };
}
