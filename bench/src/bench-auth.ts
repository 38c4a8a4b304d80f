import { JobAuth } from '@shoal/core';

/** The job id of every benchmark's `JobAuth`. */
export const BENCH_JOB_ID = 'bench';

/**
 * The benchmark's job identity. The first call makes a secret and puts it in this process's environment, so the
 * processes a benchmark starts (workers, server actors) inherit it as a launcher's would; in such a child it
 * reads that secret back.
 */
export function benchAuth(): JobAuth {
  const hex = process.env.SHOAL_JOB_SECRET;
  if (hex) return JobAuth.fromHex(BENCH_JOB_ID, hex);
  const a = JobAuth.generate(BENCH_JOB_ID);
  Object.assign(process.env, a.childEnv());
  return a;
}
