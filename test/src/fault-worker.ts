/**
 * Worker for the fault tests (launcher-faults, chaos): a small deterministic SGD loop on the engine SHOAL_BACKEND
 * names. Each step allreduces a gradient that depends only on (rank, step), applies `w -= 0.5 * mean`, and records
 * the step in $PROGRESS_DIR/<rank> (and its pid in pid-<rank>); rank 0 writes the final weights to $OUT as JSON. $STEPS steps (default 40),
 * $STEP_MS pause after each (default 20). $FAULT = `<rank>:<step>:<SIGNAL>` makes that rank send itself SIGNAL
 * (SIGKILL, SIGSTOP) after that step: a worker dying or hanging at a known point.
 */
import { writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { initWorker } from '@shoal/run';

const worker = await initWorker();
const { rank } = worker.options;
const steps = Number(process.env.STEPS ?? 40);
const pause = Number(process.env.STEP_MS ?? 20);
const fault = process.env.FAULT?.split(':');
if (process.env.PROGRESS_DIR) writeFileSync(`${process.env.PROGRESS_DIR}/pid-${rank}`, String(process.pid));
const n = 1000;
const w = { name: 'w', shape: [n], data: new Float32Array(n).map((_, i) => (rank === 0 ? (i % 13) / 16 : 0)) };
try {
  await worker.sync.broadcastParameters([w]);
  for (let step = 1; step <= steps; step++) {
    // multiples of 1/64: sums and means of a few ranks are exact in float32, so any two runs agree bit for bit
    const g = { name: 'g', shape: [n], data: new Float32Array(n).map((_, i) => (((rank + 1) * (step + i)) % 9) / 64) };
    await worker.sync.allreduceMean([g]);
    for (let i = 0; i < n; i++) w.data[i]! -= 0.5 * g.data[i]!;
    if (process.env.PROGRESS_DIR) writeFileSync(`${process.env.PROGRESS_DIR}/${rank}`, String(step));
    if (fault && Number(fault[0]) === rank && Number(fault[1]) === step) process.kill(process.pid, fault[2] as NodeJS.Signals);
    if (pause > 0) await sleep(pause);
  }
  await worker.sync.barrier();
  if (rank === 0 && process.env.OUT) writeFileSync(process.env.OUT, JSON.stringify(Array.from(w.data)));
} finally {
  await worker.close();
}
