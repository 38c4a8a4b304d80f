/**
 * `pip install ./python` in a fresh virtualenv (python/tests/test_package.py): shoal_spark imports from the venv
 * outside the repository, names SHOAL_HOME / `npm install @shoal/run` when it cannot find the Node side, and
 * trains a 2-worker job with SHOAL_HOME set.
 */
import { test } from 'uvu';
import { pytestSuite } from './spark-pytest.js';

pytestSuite({ tag: 'spark-package', title: 'pip install ./python into a fresh venv: imports, finds the Node side, trains (test_package.py)', module: 'tests/test_package.py', timeoutMs: 300_000, minPassed: 2 });
test.run();
