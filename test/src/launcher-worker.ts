/**
 * Worker for launcher tests. Joins the job (so it watches its parent), records its pid in $PID_DIR/<rank>,
 * then acts by $MODE_<rank>: `throw` (throws after THROW_AFTER_MS), `exit0`, `group` (joins the ring process
 * group, then exits), `hang` (forever), `hang-ignore-term` (forever, ignoring SIGTERM: the launcher must escalate
 * to SIGKILL).
 */
import { writeFileSync } from 'node:fs';
import { connectGroup } from '@shoal/core';
import { joinJob } from '@shoal/run';

const job = await joinJob();
const { rank } = job.options;
writeFileSync(`${process.env.PID_DIR}/${rank}`, String(process.pid));
const mode = process.env[`MODE_${rank}`] ?? 'hang';
console.log(`worker up, mode ${mode}`);
if (mode === 'throw') {
  await new Promise((r) => setTimeout(r, Number(process.env.THROW_AFTER_MS ?? 300)));
  throw new Error(`boom from rank ${rank}`);
} else if (mode === 'exit0') {
  await job.close();
} else if (mode === 'group') {
  const { worldSize: size, timeoutMs } = job.options;
  const g = await connectGroup({ rank, size, store: job.store.prefixed('ring'), transport: job.transport, listenUrl: job.listenUrl, timeoutMs });
  await g.close();
  await job.close();
} else {
  if (mode === 'hang-ignore-term') process.on('SIGTERM', () => console.log('ignoring SIGTERM'));
  setInterval(() => {}, 1000);
}
