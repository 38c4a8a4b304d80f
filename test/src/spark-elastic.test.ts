/**
 * Elastic training on Spark (python/tests/test_elastic.py, `local-cluster[2,1,1024]`): an executor killed at step 17
 * fails the barrier stage, the driver restarts it on the executor left, the new worker resumes from the step-15
 * commit held by the driver's store, and the final weights equal a one-process reference that followed the same
 * membership schedule over the same batches (within 1e-4 relative); the same on the ps backend after a worker
 * SIGKILLs itself (2 workers again, fresh servers); a job that keeps failing gives up after max_restarts; argument
 * errors. No process of the jobs is left.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-elastic] SKIPPED: ${skip}`);
  test.skip('shoal_spark elastic pytest suite', () => {});
} else {
  test('shoal_spark elastic pytest suite passes (test_elastic.py)', async () => {
    const r = await runPytest('tests/test_elastic.py', 600_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 9, `expected >= 9 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
