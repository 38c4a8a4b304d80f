/**
 * `pip install ./python` in a fresh virtualenv (python/tests/test_package.py): shoal_spark imports from the venv
 * outside the repository, names SHOAL_HOME / `npm install @shoal/run` when it cannot find the Node side, and
 * trains a 2-worker job with SHOAL_HOME set.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { pythonSkipReason, runPytest } from './spark-pytest.js';

const skip = pythonSkipReason();
if (skip) {
  console.log(`[spark-package] SKIPPED: ${skip}`);
  test.skip('shoal_spark package pytest suite', () => {});
} else {
  test('pip install ./python into a fresh venv: imports, finds the Node side, trains (test_package.py)', async () => {
    const r = await runPytest('tests/test_package.py', 300_000);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= 2, `expected >= 2 passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
test.run();
