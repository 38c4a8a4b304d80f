/**
 * shoal_spark.run on a real local Spark (python/tests/test_launcher.py): partitions streamed as Arrow into workers
 * that join one job and do a ring pass; repartitioning; an empty partition; argument checks.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-launcher] SKIPPED: ${skip}`);
  test.skip('shoal_spark launcher pytest suite', () => {});
} else {
  test('shoal_spark launcher pytest suite passes (test_launcher.py)', async () => {
    const r = await runPytest('tests/test_launcher.py', 300_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 4, `expected >= 4 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
