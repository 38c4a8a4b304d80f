import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { launch, parseRunArgs, psServerListenUrl } from '@shoal/run';
import { DIGITS_MAIN, maxRelDiff, ROOT, runNode, SHOAL_CLI } from './train-helpers.js';

// `shoal run --threads`: the workers are worker_threads of the launcher's process (shm between them by default);
// ps servers stay actor processes, reached over unix sockets unless --ps-link tcp.
const dir = mkdtempSync(join(tmpdir(), 'shoal-threads-'));
const weights = (f: string) => Float32Array.from(JSON.parse(readFileSync(f, 'utf8')).weights as number[]);
const common = ['--optimizer', 'sgd', '--lr', '0.1', '--steps', '20', '--epochs', '1'];
const WORKER = `${ROOT}test/dist/launcher-worker.js`;

/** A sink that keeps what was written, for the launcher's prefixed worker output. */
function sink(): { stream: Writable; text: () => string } {
  const chunks: string[] = [];
  return { stream: new Writable({ write: (c, _e, cb) => (chunks.push(String(c)), cb()) }), text: () => chunks.join('') };
}

test('parseRunArgs: --threads and --ps-link; psServerListenUrl gives unix socket templates or tcp', () => {
  const o = parseRunArgs(['-n', '3', '--threads', '--ps-link', 'tcp', 'a.js', '--x', '1']);
  assert.is(o.threads, true);
  assert.is(o.psLink, 'tcp');
  assert.equal(o.args, ['--x', '1']);
  assert.throws(() => parseRunArgs(['-n', '2', '--ps-link', 'udp', 'a.js']), /--ps-link must be one of ipc\|tcp\|shm/);
  const ipc = psServerListenUrl({ storeUrl: '', store: undefined as never, numServers: 1, numWorkers: 1, timeoutMs: 1, link: 'ipc', socketDir: '/tmp', jobId: 'j/1' }, 0);
  assert.is(ipc, 'ipc:///tmp/shoal-j_1-{actor}-{door}.sock');
  const long = psServerListenUrl({ storeUrl: '', store: undefined as never, numServers: 1, numWorkers: 1, timeoutMs: 1, link: 'ipc', socketDir: `/tmp/${'d'.repeat(120)}`, jobId: 'j' }, 0);
  assert.ok(long.startsWith(`ipc://${tmpdir()}/shoal-`) && long.length < 100, long);
  assert.is(psServerListenUrl({ storeUrl: '', store: undefined as never, numServers: 1, numWorkers: 1, timeoutMs: 1, link: 'tcp', host: '10.0.0.5' }, 0), 'tcp://10.0.0.5:0');
  assert.is(psServerListenUrl({ storeUrl: '', store: undefined as never, numServers: 1, numWorkers: 1, timeoutMs: 1, link: 'shm' }, 0), 'shm://auto');
});

test('--threads -n 2 (ring over shm) gives the weights of 1 worker process with batch 32', async () => {
  const one = await runNode([SHOAL_CLI, 'run', '-n', '1', DIGITS_MAIN, ...common, '--batch-size', '32', '--out', join(dir, 'w1.json')], { timeoutMs: 60_000 });
  assert.is(one.code, 0, one.stderr);
  const two = await runNode([SHOAL_CLI, 'run', '-n', '2', '--threads', DIGITS_MAIN, ...common, '--batch-size', '16', '--out', join(dir, 'wt.json')], { timeoutMs: 60_000 });
  assert.is(two.code, 0, two.stderr);
  assert.match(two.stdout, /\[rank 0\] test accuracy: .*2 worker\(s\)/);
  const d = maxRelDiff(weights(join(dir, 'wt.json')), weights(join(dir, 'w1.json')));
  assert.ok(d <= 1e-5, `max relative difference ${d}`);
});

test('ps servers over unix sockets (threads), tcp and shm (processes, --ps-link) match 1 worker too', async () => {
  // In this process through the API, with a known job id, to check the socket files.
  const jobId = `thr-${process.pid}`;
  const r0 = await launch({
    script: DIGITS_MAIN,
    args: [...common, '--batch-size', '16', '--out', join(dir, 'threads-ps-ipc.json')],
    numWorkers: 2,
    threads: true,
    backend: 'ps',
    servers: 2,
    jobId,
    timeoutMs: 20_000,
    jobTimeoutMs: 50_000,
    stdout: sink().stream,
    stderr: sink().stream,
  });
  assert.is(r0.code, 0, r0.error);
  const d0 = maxRelDiff(weights(join(dir, 'threads-ps-ipc.json')), weights(join(dir, 'w1.json')));
  assert.ok(d0 <= 1e-5, `threads-ps-ipc: max relative difference ${d0}`);
  // The servers listened on unix sockets and removed the files when they stopped.
  const left = readdirSync(tmpdir()).filter((f) => f.startsWith(`shoal-${jobId}-`));
  assert.equal(left, [], `socket files left: ${left.join(', ')}`);
  const runs: Array<[string, string[]]> = [
    ['threads-hybrid-ipc', ['--threads', '--backend', 'hybrid']],
    ['proc-ps-tcp', ['--backend', 'ps', '--ps-link', 'tcp']],
    ['proc-hybrid-shm', ['--backend', 'hybrid', '--ps-link', 'shm']],
  ];
  for (const [name, flags] of runs) {
    const r = await runNode([SHOAL_CLI, 'run', '-n', '2', ...flags, '--servers', '2', DIGITS_MAIN, ...common, '--batch-size', '16', '--out', join(dir, `${name}.json`)], { timeoutMs: 60_000 });
    assert.is(r.code, 0, `${name}: ${r.stderr}`);
    const d = maxRelDiff(weights(join(dir, `${name}.json`)), weights(join(dir, 'w1.json')));
    assert.ok(d <= 1e-5, `${name}: max relative difference ${d}`);
  }
});

test('launch({ threads }): a throwing thread fails the job naming its rank and error; the hanging rank is terminated', async () => {
  const out = sink();
  const err = sink();
  const t0 = Date.now();
  const r = await launch({
    script: WORKER,
    numWorkers: 2,
    threads: true,
    env: { PID_DIR: dir, MODE_0: 'hang', MODE_1: 'throw', THROW_AFTER_MS: '200' },
    timeoutMs: 20_000,
    jobTimeoutMs: 30_000,
    stdout: out.stream,
    stderr: err.stream,
  });
  assert.is(r.failedRank, 1, JSON.stringify(r));
  assert.ok(r.code !== 0);
  assert.match(r.error ?? '', /boom from rank 1/);
  assert.is(r.exits.length, 2);
  assert.ok(Date.now() - t0 < 15_000, `took ${Date.now() - t0} ms`);
  assert.match(out.text(), /\[rank 0\] worker up, mode hang/);
  assert.match(err.text(), /\[rank 1\] Error: boom from rank 1/);
  // Threads share the launcher's pid: both recorded this process.
  assert.is(readFileSync(join(dir, '0'), 'utf8'), String(process.pid));
});

test('launch({ threads }): workers get their options from workerData, not SHOAL_* in process.env', async () => {
  const out = sink();
  const r = await launch({ script: WORKER, numWorkers: 2, threads: true, env: { PID_DIR: dir, MODE_0: 'exit0', MODE_1: 'exit0' }, timeoutMs: 20_000, jobTimeoutMs: 30_000, stdout: out.stream, stderr: sink().stream });
  assert.is(r.code, 0, r.error);
  assert.equal(r.exits.map((e) => e.code), [0, 0]);
  assert.is(process.env.SHOAL_RANK, undefined);
  assert.match(out.text(), /\[rank 1\] worker up, mode exit0/);
});

test('launch({ threads, jobTimeoutMs }): hanging threads are terminated and the job fails with code 124', async () => {
  const t0 = Date.now();
  const r = await launch({ script: WORKER, numWorkers: 2, threads: true, env: { PID_DIR: dir }, timeoutMs: 20_000, jobTimeoutMs: 1500, stdout: sink().stream, stderr: sink().stream });
  assert.is(r.code, 124, JSON.stringify(r));
  assert.match(r.error ?? '', /timed out after 1500 ms/);
  assert.is(r.failedRank, undefined);
  assert.ok(Date.now() - t0 < 10_000, `took ${Date.now() - t0} ms`);
});

test('--threads runs a TypeScript script (through tsx in each thread)', async () => {
  const out = sink();
  const r = await launch({ script: `${ROOT}test/fixtures/launcher-ts-worker.ts`, numWorkers: 2, threads: true, timeoutMs: 20_000, jobTimeoutMs: 60_000, stdout: out.stream, stderr: sink().stream });
  assert.is(r.code, 0, r.error);
  assert.match(out.text(), /ts worker rank 0 of 2/);
  assert.match(out.text(), /ts worker rank 1 of 2/);
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
