/**
 * Worker of the faults bench: $STEPS steps of a $SIZE-float allreduceMean (+ SGD) on the engine SHOAL_BACKEND
 * names. Rank 0 records its step in $PROGRESS_DIR/0 as it goes and, at the end, the wall-clock time each step
 * ended in $PROGRESS_DIR/times.json (the bench compares them with when it killed a server).
 */
import { writeFileSync } from 'node:fs';
import { initWorker } from '@shoal/run';

const worker = await initWorker();
const { rank } = worker.options;
const steps = Number(process.env.STEPS ?? 200);
const n = Number(process.env.SIZE ?? 100_000);
const dir = process.env.PROGRESS_DIR!;
const w = { name: 'w', shape: [n], data: new Float32Array(n).fill(rank === 0 ? 1 : 0) };
const times: number[] = [];
try {
  await worker.sync.broadcastParameters([w]);
  const g = { name: 'g', shape: [n], data: new Float32Array(n) };
  for (let step = 1; step <= steps; step++) {
    g.data.fill((rank + 1) / 64);
    await worker.sync.allreduceMean([g]);
    for (let i = 0; i < n; i++) w.data[i]! -= 0.01 * g.data[i]!;
    times.push(Date.now());
    if (rank === 0) writeFileSync(`${dir}/0`, String(step));
  }
  await worker.sync.barrier();
  if (rank === 0) writeFileSync(`${dir}/times.json`, JSON.stringify(times));
} finally {
  await worker.close();
}
