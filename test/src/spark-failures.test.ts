/**
 * Failures under shoal_spark.run on a real local Spark (python/tests/test_failures.py): a failing worker fails the
 * job with its rank and message, a hung one is killed at the deadline, a missing node binary and a broken Spark
 * input are clear errors, and no worker, store or ps server actor of the job is left in the process table.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-failures] SKIPPED: ${skip}`);
  test.skip('shoal_spark failure pytest suite', () => {});
} else {
  test('shoal_spark failure pytest suite passes (test_launcher.py)', async () => {
    const r = await runPytest('tests/test_failures.py', 300_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 5, `expected >= 5 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
