import { JobAuth } from '@shoal/core';

/** The job id every multi-process test uses for its `JobAuth` (store server, workers, actors). */
export const TEST_JOB_ID = 'test-job';

/**
 * This test process's job identity. The first call makes a secret and puts it in this process's environment, so
 * the child processes a test starts (rank workers, actor hosts) inherit it as a launcher's children would; in a
 * child, it reads that secret back. Only tests do this: the library never writes the environment.
 */
export function testAuth(): JobAuth {
  const hex = process.env.SHOAL_JOB_SECRET;
  if (hex) return JobAuth.fromHex(TEST_JOB_ID, hex);
  const a = JobAuth.generate(TEST_JOB_ID);
  Object.assign(process.env, a.childEnv());
  return a;
}
