/**
 * Runs one pytest module of python/tests (the shoal_spark launcher's tests, which start a real Spark) from a uvu
 * test, so the README's one test command covers them. Not a test file itself.
 *
 * If pyspark is not importable the caller registers its test as skipped, with the reason printed.
 */
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

export const REPO = fileURLToPath(new URL('../..', import.meta.url));

/** Why the Python side cannot run here, or null when `python3 -c "import pyspark, pyarrow, pytest"` works. */
export function pythonSkipReason(python = process.env.SHOAL_PYTHON ?? 'python3'): string | null {
  const r = spawnSync(python, ['-c', 'import pyspark, pyarrow, pytest'], { encoding: 'utf8', timeout: 60_000 });
  if (r.error) return `${python} is not runnable (${r.error.message})`;
  if (r.status !== 0) return `pyspark/pyarrow/pytest not importable by ${python} (pip install -r requirements.txt): ${r.stderr.trim().split('\n').pop()}`;
  return null;
}

export interface PytestRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  passed: number;
  failed: number;
  output: string;
}

/**
 * Run `python3 -m pytest <target>` in python/ with a hard time limit (the process group is killed at the limit).
 * Output is forwarded live to this process's stdout and returned.
 */
export function runPytest(target: string, timeoutMs: number, python = process.env.SHOAL_PYTHON ?? 'python3'): Promise<PytestRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, ['-m', 'pytest', target, '-q', '-rfE'], {
      cwd: `${REPO}python`,
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    let output = '';
    const onData = (d: Buffer) => {
      output += d.toString();
      process.stdout.write(d);
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    const timer = setTimeout(() => {
      output += `\n[spark-pytest] killed after ${timeoutMs} ms\n`;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const num = (label: string) => Number(output.match(new RegExp(`(\\d+) ${label}`))?.[1] ?? 0);
      resolve({ code, signal, passed: num('passed'), failed: num('failed') + num('error'), output });
    });
  });
}

export interface PytestSuite {
  /** Prefix of the skip line (the test file's name). */
  tag: string;
  /** The uvu test's title (also the skipped test's). */
  title: string;
  /** Module under python/, e.g. `tests/test_train.py`. */
  module: string;
  timeoutMs: number;
  /** Fewest passing cases that count as the module having run (a module that collects nothing must fail). */
  minPassed: number;
}

/**
 * Register one uvu test that runs a pytest module and asserts no failure, at least `minPassed` passed and exit 0;
 * registered as skipped, with the reason printed, when pyspark/pyarrow/pytest are not importable.
 */
export function pytestSuite(s: PytestSuite): void {
  const skip = pythonSkipReason();
  if (skip) {
    console.log(`[${s.tag}] SKIPPED: ${skip}`);
    test.skip(s.title, () => {});
    return;
  }
  test(s.title, async () => {
    const r = await runPytest(s.module, s.timeoutMs);
    assert.is(r.failed, 0, 'pytest failures');
    assert.ok(r.passed >= s.minPassed, `expected >= ${s.minPassed} passed, got ${r.passed}`);
    assert.is(r.code, 0, `pytest exited ${r.code ?? r.signal}`);
  });
}
