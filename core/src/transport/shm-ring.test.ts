// Runs the shared-memory addon's native ring test (core/native/shm/test/ring-test.cc): the SPSC ring is plain
// C++, so it is compiled here with the same `c++` node-gyp uses and run as its own program.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const shmDir = fileURLToPath(new URL('../../native/shm/', import.meta.url));

test('shm ring native test builds and passes', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-ring-test-'));
  try {
    const exe = join(dir, 'ring-test');
    const cc = spawnSync('c++', ['-std=c++17', '-O2', '-Wall', '-Werror', '-pthread', '-o', exe,
      join(shmDir, 'test/ring-test.cc'), join(shmDir, 'src/ring.cc')], { encoding: 'utf8', timeout: 120_000 });
    assert.is(cc.status, 0, `c++ failed: ${cc.error?.message ?? ''}${cc.stderr}`);
    const run = spawnSync(exe, [], { encoding: 'utf8', timeout: 60_000 });
    assert.is(run.status, 0, `ring-test failed (${run.signal ?? run.status}): ${run.stdout}${run.stderr}`);
    const lines = run.stdout.trim().split('\n');
    assert.equal(lines.length, 3, run.stdout);
    for (const line of lines) assert.ok(line.startsWith('ok '), line);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
