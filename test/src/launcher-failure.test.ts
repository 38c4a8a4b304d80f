import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { sleep } from '@shoal/core';
import { launch, parseRunArgs, pickRootCause } from '@shoal/run';
import { alive, DIGITS_MAIN, ROOT, runNode, SHOAL_CLI } from './train-helpers.js';

const WORKER = `${ROOT}test/dist/launcher-worker.js`;
const sink = () => {
  let text = '';
  const w = new Writable({ write: (c, _e, cb) => ((text += c), cb()) });
  return { w, text: () => text };
};
const pidsIn = (dir: string) => readdirSync(dir).map((f) => Number(readFileSync(join(dir, f), 'utf8')));
async function waitFor(cond: () => boolean, ms: number, what: string) {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

test('a worker throwing mid-epoch makes shoal run exit non-zero with that rank and its error', async () => {
  const r = await runNode([SHOAL_CLI, 'run', '-n', '2', '--grace-ms', '500', DIGITS_MAIN, '--epochs', '3', '--fail-at-step', '1:7'], { timeoutMs: 60_000 });
  assert.is.not(r.code, 0);
  assert.ok(r.ms < 60_000);
  assert.match(r.stderr, /shoal run: rank 1 failed \(exit code 1\)/);
  assert.match(r.stderr, /injected failure on rank 1 at step 7/);
  assert.match(r.stderr, /stopped rank\(s\) 0/);
});

test('launch(): the first failure stops the others, escalating to SIGKILL, and no worker survives', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-launch-'));
  const out = sink();
  const err = sink();
  try {
    const t0 = Date.now();
    const r = await launch({
      script: WORKER,
      numWorkers: 3,
      graceMs: 700,
      env: { PID_DIR: dir, MODE_0: 'hang', MODE_1: 'hang-ignore-term', MODE_2: 'throw', THROW_AFTER_MS: '500' },
      stdout: out.w,
      stderr: err.w,
      jobTimeoutMs: 30_000,
    });
    assert.is(r.failedRank, 2);
    assert.is(r.code, 1);
    assert.match(r.error ?? '', /boom from rank 2/);
    assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
    assert.match(out.text(), /\[rank 1\] worker up, mode hang-ignore-term/);
    assert.match(err.text(), /\[rank 2\] .*boom from rank 2/);
    const byRank = Object.fromEntries(r.exits.map((e) => [e.rank, e]));
    assert.is(byRank[1]!.signal, 'SIGKILL', 'the SIGTERM-ignoring worker was killed');
    assert.is(byRank[0]!.signal, 'SIGTERM');
    for (const pid of pidsIn(dir)) assert.not.ok(alive(pid), `worker ${pid} still alive`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('launch(): all workers exiting 0 is success', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-launch-'));
  try {
    const r = await launch({ script: WORKER, numWorkers: 2, env: { PID_DIR: dir, MODE_0: 'exit0', MODE_1: 'exit0' }, stdout: sink().w, stderr: sink().w, jobTimeoutMs: 30_000 });
    assert.is(r.code, 0);
    assert.is(r.failedRank, undefined);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('SIGTERM to shoal run stops every worker; SIGKILL of shoal run makes the workers exit on their own', async () => {
  for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
    const dir = mkdtempSync(join(tmpdir(), 'shoal-launch-'));
    try {
      let cli = 0;
      const run = runNode([SHOAL_CLI, 'run', '-n', '2', '--grace-ms', '500', WORKER], { timeoutMs: 30_000, env: { PID_DIR: dir }, onSpawn: (p) => (cli = p) });
      await waitFor(() => readdirSync(dir).length === 2, 20_000, 'workers to start');
      const pids = pidsIn(dir);
      process.kill(cli, sig);
      const r = await run;
      if (sig === 'SIGTERM') assert.is(r.code, 143, r.stderr);
      // After SIGKILL nobody signals the workers: they see their parent change and exit (joinJob's watch).
      await waitFor(() => pids.every((p) => !alive(p)), 5_000, `workers to exit after ${sig}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }
});

test('run arguments: flags, script args, and clear errors', () => {
  const o = parseRunArgs(['-n', '4', '--backend', 'ps', '--servers', '2', '--transport', 'nng', 'train.js', '--epochs', '3']);
  assert.equal([o.numWorkers, o.backend, o.servers, o.transport, o.script, o.args], [4, 'ps', 2, 'nng', 'train.js', ['--epochs', '3']]);
  assert.throws(() => parseRunArgs(['train.js']), /-n N is required/);
  assert.throws(() => parseRunArgs(['-n', '0', 'x.js']), /-n must be an integer in 1\.\./);
  assert.throws(() => parseRunArgs(['-n', '2', '--backend', 'mpi', 'x.js']), /--backend must be one of ring\|ps\|hybrid/);
  assert.throws(() => parseRunArgs(['-n', '2', '--frobnicate', 'x.js']), /unknown option --frobnicate/);
});

test('the root cause is the first failure that is not a consequence of a dead peer', () => {
  const a = { rank: 0, tail: ['ShoalError: rank 0: recv from rank 1: peer closed the connection', "  code: 'ERR_PEER_CLOSED'"] };
  const b = { rank: 1, tail: ['Error: injected failure'] };
  assert.is(pickRootCause([a, b])!.rank, 1);
  assert.is(pickRootCause([a])!.rank, 0);
  assert.is(pickRootCause([]), undefined);
});

test('shoal run runs a .ts worker through tsx', async () => {
  const r = await runNode([SHOAL_CLI, 'run', '-n', '2', `${ROOT}test/fixtures/launcher-ts-worker.ts`], { timeoutMs: 30_000 });
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /\[rank 0\] ts worker rank 0 of 2/);
  assert.match(r.stdout, /\[rank 1\] ts worker rank 1 of 2/);
});

test('shoal run with a missing script fails fast with a config error', async () => {
  const r = await runNode([SHOAL_CLI, 'run', '-n', '2', 'does-not-exist.js'], { timeoutMs: 20_000 });
  assert.is.not(r.code, 0);
  assert.match(r.stderr, /does-not-exist\.js does not exist/);
});

test.run();
