/**
 * Issue #16: `shoal run` watches every process it started. A parameter server that dies fails the job at once,
 * named in the headline ahead of the workers' follow-on errors; with `--ps-durable` the launcher restarts it from
 * its checkpoint and the job ends with the weights of a clean run; a hang is blamed on the rank the others waited
 * for. Real processes throughout (fault-worker.ts), and nothing may be left behind.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { launch, parseRunArgs, pickStalledRank, PS_MAX_RESTARTS, type LaunchOptions, type LaunchResult } from '@shoal/run';
import { FAULT_WORKER, serverPid, settledLeftovers, waitStep, workerPids } from './fault-helpers.js';
import { SHOAL_CLI } from './train-helpers.js';

const TIMEOUT_MS = 6000;
const quiet = () => new Writable({ write: (_c, _e, cb) => cb() });
let jobs = 0;

interface Run {
  result: LaunchResult;
  weights?: number[];
  leftovers: string[];
  ms: number;
}

/** Run fault-worker under launch(); `during` gets the progress dir and job id while the job runs. */
async function run(o: Partial<LaunchOptions>, env: Record<string, string>, during?: (dir: string, jobId: string) => Promise<void>): Promise<Run> {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-faults-'));
  const jobId = `faults-${process.pid}-${jobs++}`;
  const out = join(dir, 'weights.json');
  try {
    const t0 = Date.now();
    const job = launch({ script: FAULT_WORKER, numWorkers: 2, timeoutMs: TIMEOUT_MS, jobTimeoutMs: 90_000, graceMs: 1000, jobId, stdout: quiet(), stderr: quiet(), ...o, env: { PROGRESS_DIR: dir, OUT: out, ...env } });
    const fault = during?.(dir, jobId);
    const result = await job;
    await fault;
    const ms = Date.now() - t0;
    let weights: number[] | undefined;
    try {
      weights = JSON.parse(readFileSync(out, 'utf8')) as number[];
    } catch {
      /* no weights: the job failed */
    }
    return { result, ms, leftovers: await settledLeftovers(jobId, workerPids(dir)), ...(weights ? { weights } : {}) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Kill server `name` once rank 0 reached `step`. */
const killServer = (name: string, step: number) => async (dir: string, jobId: string) => {
  await waitStep(dir, 0, step);
  const pid = serverPid(jobId, name);
  assert.ok(pid, `${name} of ${jobId} not found`);
  process.kill(pid!, 'SIGKILL');
};

for (const backend of ['ps', 'hybrid'] as const) {
  test(`${backend}: SIGKILL of a server fails the job at once, naming the server; nothing left behind`, async () => {
    const r = await run({ backend, servers: 2 }, { STEPS: '400' }, killServer('ps-server-1', 10));
    assert.is(r.result.failedProcess, 'ps-server-1', JSON.stringify(r.result));
    assert.match(r.result.error ?? '', /^ps-server-1 died \(killed by SIGKILL\)/);
    assert.is(r.result.code, 137);
    assert.is(r.weights, undefined);
    assert.ok(r.ms < 2 * TIMEOUT_MS, `failed after ${r.ms} ms`);
    assert.equal(r.leftovers, []);
  });
}

test('shoal run: the headline names the dead server, ahead of the workers errors', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-faults-'));
  try {
    const cli = spawn(process.execPath, [SHOAL_CLI, 'run', '-n', '2', '--backend', 'ps', '--servers', '2', '--ps-link', 'ipc', '--timeout-ms', String(TIMEOUT_MS), FAULT_WORKER], {
      env: { ...process.env, PROGRESS_DIR: dir, STEPS: '400' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    cli.stderr!.on('data', (d) => (stderr += d));
    const exited = new Promise<number | null>((r) => cli.once('exit', (c) => r(c)));
    await waitStep(dir, 0, 10);
    // the job id is the launcher's default: job-<pid>-<time>
    const pid = serverPid(`job-${cli.pid}-`, 'ps-server-1');
    assert.ok(pid, 'ps-server-1 not found');
    process.kill(pid!, 'SIGKILL');
    const t0 = Date.now();
    const code = await exited;
    assert.ok(Date.now() - t0 < 2 * TIMEOUT_MS, `exited ${Date.now() - t0} ms after the kill`);
    assert.is(code, 137, stderr);
    assert.match(stderr, /shoal run: ps-server-1 failed after [\d.]+ s:\n {2}ps-server-1 died \(killed by SIGKILL\)\n/);
    assert.not.match(stderr, /shoal run: rank \d failed/);
    assert.equal(await settledLeftovers(`job-${cli.pid}-`, workerPids(dir)), []);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('--ps-placement worker: rank 0 hosts the servers, no server process; the weights equal the default placement', async () => {
  const base = await run({ backend: 'ps', servers: 2 }, { STEPS: '40' });
  const inWorker = await run({ backend: 'ps', servers: 2, psPlacement: 'worker' }, { STEPS: '40' }, async (dir, jobId) => {
    await waitStep(dir, 0, 5);
    assert.is(serverPid(jobId, 'ps-server-0'), undefined, 'no server process');
  });
  assert.is(inWorker.result.code, 0, inWorker.result.error);
  assert.ok(base.weights && inWorker.weights);
  assert.equal(inWorker.weights, base.weights);
  assert.equal(inWorker.leftovers, []);
});

test('--ps-placement worker: SIGKILL of rank 0 (the servers with it) fails the job naming rank 0; nothing left behind', async () => {
  const r = await run({ backend: 'ps', servers: 1, psPlacement: 'worker' }, { STEPS: '400' }, async (dir) => {
    await waitStep(dir, 0, 10);
    process.kill(workerPids(dir)[0]!, 'SIGKILL');
  });
  assert.is(r.result.failedRank, 0, JSON.stringify(r.result));
  assert.is(r.weights, undefined);
  assert.ok(r.ms < 2 * TIMEOUT_MS, `failed after ${r.ms} ms`);
  assert.equal(r.leftovers, []);
});

test('--ps-durable: a server killed mid-job is restarted from its checkpoint; the weights equal a clean run', async () => {
  const durable = mkdtempSync(join(tmpdir(), 'shoal-durable-'));
  try {
    const clean = await run({ backend: 'ps', servers: 2 }, { STEPS: '60' });
    assert.is(clean.result.code, 0, clean.result.error);
    const faulty = await run({ backend: 'ps', servers: 2, psDurable: durable }, { STEPS: '60' }, killServer('ps-server-1', 20));
    assert.is(faulty.result.code, 0, faulty.result.error);
    assert.ok(faulty.weights && clean.weights);
    assert.equal(faulty.weights, clean.weights);
    assert.equal(faulty.leftovers, []);
  } finally {
    rmSync(durable, { recursive: true, force: true });
  }
});

test(`--ps-durable: a server that dies more than ${PS_MAX_RESTARTS} times fails the job naming it`, async () => {
  const durable = mkdtempSync(join(tmpdir(), 'shoal-durable-'));
  try {
    const r = await run({ backend: 'ps', servers: 1, psDurable: durable }, { STEPS: '2000', STEP_MS: '5' }, async (dir, jobId) => {
      let last: number | undefined;
      for (let k = 0; k <= PS_MAX_RESTARTS; k++) {
        await waitStep(dir, 0, 5 + 5 * k);
        let pid: number | undefined;
        for (let i = 0; i < 200 && (pid === undefined || pid === last); i++) {
          pid = serverPid(jobId, 'ps-server-0');
          if (pid === undefined || pid === last) await new Promise((r) => setTimeout(r, 20));
        }
        assert.ok(pid !== undefined && pid !== last, `incarnation ${k} not found`);
        process.kill(pid!, 'SIGKILL');
        last = pid;
      }
    });
    assert.is(r.result.failedProcess, 'ps-server-0', JSON.stringify(r.result));
    assert.match(r.result.error ?? '', new RegExp(`^ps-server-0 died \\(killed by SIGKILL\\); restarted ${PS_MAX_RESTARTS} time\\(s\\) already`));
    assert.equal(r.leftovers, []);
  } finally {
    rmSync(durable, { recursive: true, force: true });
  }
});

test('--ps-durable DIR is parsed for ps and hybrid and refused for ring', () => {
  assert.is(parseRunArgs(['-n', '2', '--backend', 'hybrid', '--ps-durable', '/tmp/ckpt', 'w.js']).psDurable, '/tmp/ckpt');
  assert.throws(() => parseRunArgs(['-n', '2', '--ps-durable', '/tmp/ckpt', 'w.js']), /--ps-durable needs --backend ps or hybrid/);
});

test('pickStalledRank names the rank the timed-out ranks waited for, not one of them', () => {
  const f = (rank: number, ...tail: string[]) => ({ rank, tail });
  assert.equal(pickStalledRank([f(0, 'ShoalError [ERR_TIMEOUT]: allreduce #12 waiting for rank(s) 2 (chunk 0, stage reduce) timed out after 3000 ms'), f(1, 'ERR_PEER_CLOSED: rank 0 timed out')]), { rank: 2, waiters: [0] });
  assert.equal(pickStalledRank([f(0, 'push on server 0: waiting for worker 1 timed out'), f(2, 'pull: waiting for workers 1, 3')]), { rank: 1, waiters: [0, 2] });
  assert.is(pickStalledRank([f(0, 'boom'), f(1, 'waiting for rank(s) 0')]), undefined, 'the rank waited for failed itself');
  assert.is(pickStalledRank([f(0, 'Error: boom')]), undefined);
});

for (const backend of ['ring', 'ps'] as const) {
  test(`${backend}: SIGSTOP of a worker is blamed on it, not on the rank that timed out`, async () => {
    const r = await run({ backend, timeoutMs: 3000 }, { STEPS: '400', FAULT: '1:10:SIGSTOP' });
    assert.is(r.result.failedRank, 1, JSON.stringify(r.result));
    assert.match(r.result.error ?? '', /^rank 1 stopped making progress: rank\(s\) 0 timed out waiting for it/);
    assert.ok(r.ms < 2 * 3000 + 5000, `took ${r.ms} ms`);
    assert.equal(r.leftovers, []);
  });
}

test.run();
