// Issue #15: SIGKILL of `shoal run` leaves nothing in /dev/shm or the temporary directory. A ps job's server
// actors keep doors open (unix socket files with --ps-link ipc, shared-memory segments with --ps-link shm), named
// after the job id `job-<launcher pid>-...`; when the launcher dies, its workers and servers remove them on their
// way out, and the next launch sweeps whatever a dead launcher's job still left.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sweepLeftovers } from '@shoal/core/security';
import { ROOT, runNode, SHOAL_CLI } from './train-helpers.js';

const WORKER = `${ROOT}test/dist/launcher-worker.js`;

/** Names in /dev/shm and the temporary directory that belong to the job of launcher `pid`. */
function namesOf(pid: number): string[] {
  const re = new RegExp(`^shoal-(job-)?${pid}-`);
  return ['/dev/shm', tmpdir()].flatMap((d) => readdirSync(d).filter((n) => re.test(n)).map((n) => join(d, n)));
}

async function waitFor<T>(get: () => T, ok: (v: T) => boolean, ms: number): Promise<T> {
  const end = Date.now() + ms;
  let v = get();
  while (!ok(v) && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 100));
    v = get();
  }
  return v;
}

for (const link of ['ipc', 'shm'] as const) {
  test(`SIGKILL of shoal run (ps job, --ps-link ${link}) leaves nothing in /dev/shm or ${tmpdir()}`, async () => {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-leftover-'));
    try {
      let cli = 0;
      const run = runNode([SHOAL_CLI, 'run', '-n', '1', '--backend', 'ps', '--servers', '2', '--ps-link', link, '--grace-ms', '500', WORKER], {
        timeoutMs: 60_000,
        env: { PID_DIR: dir, MODE_0: 'hang' },
        onSpawn: (p) => (cli = p),
      });
      await waitFor(() => readdirSync(dir).length, (n) => n === 1, 30_000);
      const worker = Number(readFileSync(join(dir, '0'), 'utf8'));
      assert.ok(worker > 0, 'the worker started');
      const before = namesOf(cli);
      assert.ok(before.length > 0, `the running job has names to leave behind (${before.join(', ')})`);
      process.kill(cli, 'SIGKILL');
      await run;
      const left = await waitFor(() => namesOf(cli), (v) => v.length === 0, 15_000);
      assert.equal(left, [], 'names left after the job died');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

test('the next launch sweeps names of jobs whose launcher is dead, and only those', () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-sweep-'));
  try {
    // A pid that is not running (pid_max is at most 2^22 on Linux) and one that is (this process's parent).
    const dead = 4_194_303;
    const live = process.ppid;
    for (const n of [`shoal-job-${dead}-abc-ps-server-0-1-0.sock`, `shoal-${dead}-x`, `shoal-job-${live}-keep`, 'shoal-net-keep', 'other']) writeFileSync(join(dir, n), '');
    const removed = sweepLeftovers({ dirs: [dir] }).map((p) => p.slice(dir.length + 1)).sort();
    assert.equal(removed, [`shoal-${dead}-x`, `shoal-job-${dead}-abc-ps-server-0-1-0.sock`]);
    assert.equal(readdirSync(dir).sort(), ['other', `shoal-job-${live}-keep`, 'shoal-net-keep']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.run();
