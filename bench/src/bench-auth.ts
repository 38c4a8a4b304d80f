import { JobAuth, JobTls } from '@shoal/core';

/** The job id of every benchmark's `JobAuth`. */
export const BENCH_JOB_ID = 'bench';

/**
 * The benchmark's job identity. The first call makes a secret and puts it in this process's environment, so the
 * processes a benchmark starts (workers, server actors) inherit it as a launcher's would; in such a child it
 * reads that secret back, and the job's TLS certificate when the driver passed one (`--tls` rows: `tlsEnv`).
 */
export function benchAuth(): JobAuth {
  const hex = process.env.SHOAL_JOB_SECRET;
  if (hex) return JobAuth.fromEnv(BENCH_JOB_ID, process.env);
  const a = JobAuth.generate(BENCH_JOB_ID);
  Object.assign(process.env, a.childEnv());
  return a;
}

/**
 * For a suite's `--tls` rows: the benchmark's identity under a fresh job certificate (TCP connections then run TLS
 * 1.3 with it pinned, as `shoal run --tls`), and the environment its child processes need to join that way.
 */
export async function benchTls(): Promise<{ auth: JobAuth; env: Record<string, string> }> {
  const auth = benchAuth().withTls(await JobTls.generate(BENCH_JOB_ID));
  return { auth, env: auth.childEnv() };
}
