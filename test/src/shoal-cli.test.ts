import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT, runNode, SHOAL_CLI } from './train-helpers.js';

// The `shoal` command as a user meets it (issue #17, CLI): help, version, suggestions, one-line errors, the
// after-the-script rule, -n bounds, the oversubscription warning, and join timeouts that name the missing rank.

const WORKER = `${ROOT}test/dist/launcher-worker.js`;
const VERSION = (JSON.parse(readFileSync(`${ROOT}run/package.json`, 'utf8')) as { version: string }).version;
const shoal = (args: string[], env: Record<string, string> = {}, timeoutMs = 120_000) => runNode([SHOAL_CLI, ...args], { timeoutMs, env });
const noStack = (s: string) => !/\n\s+at /.test(s);

test('shoal --version and -v print the version; npx shoal resolves the bin', async () => {
  for (const flag of ['--version', '-v']) {
    const r = await shoal([flag]);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout, `shoal ${VERSION}\n`);
  }
  const bin = spawnSync(join(ROOT, 'node_modules/.bin/shoal'), ['--version'], { cwd: ROOT, encoding: 'utf8', timeout: 120_000 });
  assert.is(bin.error, undefined, `node_modules/.bin/shoal: ${bin.error?.message}`);
  assert.is(bin.status, 0, bin.stderr);
  assert.is(bin.stdout, `shoal ${VERSION}\n`);
});

test('--help on every command: shoal, shoal run (exit 0, usage on stdout); no arguments is usage on stdout, exit 2', async () => {
  const top = await shoal(['--help']);
  assert.is(top.code, 0);
  assert.match(top.stdout, /^usage: shoal <command> \[options\]/);
  assert.match(top.stdout, /run {5}start N workers/);
  const run = await shoal(['run', '--help']);
  assert.is(run.code, 0, run.stderr);
  assert.match(run.stdout, /^usage: shoal run -n N \[options\] script\.js/);
  assert.match(run.stdout, /--oversubscribe/);
  const h = await shoal(['run', '-h']);
  assert.is(h.stdout, run.stdout);
  const none = await shoal([]);
  assert.is(none.code, 2);
  assert.match(none.stdout, /^usage: shoal/);
  const store = await runNode([`${ROOT}run/dist/launcher/spark-store.js`, '--help'], { timeoutMs: 20_000 });
  assert.is(store.code, 0, store.stderr);
  assert.match(store.stdout, /^usage: spark-store --host ADDR/);
});

test('typos get a suggestion, as one line on stderr with exit code 2', async () => {
  const c = await shoal(['rnu', '-n', '2', 'x.js']);
  assert.is(c.code, 2);
  assert.is(c.stderr, 'shoal: unknown command "rnu" (did you mean run?); see shoal --help\n');
  const o = await shoal(['run', '-n', '2', '--bakend', 'ps', WORKER]);
  assert.is(o.code, 2);
  assert.is(o.stderr, 'shoal run: unknown option --bakend (did you mean --backend?); see shoal run --help\n');
  assert.is(o.stdout, '');
});

test('a shoal flag after the script is an error naming it, nothing started; after `--` it goes to the script', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-cli-'));
  try {
    const r = await shoal(['run', '-n', '2', WORKER, '--backend', 'ps'], { PID_DIR: dir });
    assert.is(r.code, 2);
    assert.match(r.stderr, /^shoal run: --backend comes after the script .*launcher-worker\.js, so it would go to the script/);
    assert.is(r.stderr.split('\n').length, 2, r.stderr);
    assert.equal(readdirSync(dir), [], 'no worker started');
    const ok = await shoal(['run', '-n', '2', '--', WORKER, '--backend', 'ps'], { PID_DIR: dir, MODE_0: 'exit0', MODE_1: 'exit0' });
    assert.is(ok.code, 0, ok.stderr);
    assert.equal(readdirSync(dir).sort(), ['0', '1']);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('-n is bounded: 1e9 and more than 4 per core without --oversubscribe are clear errors, nothing spawned', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-cli-'));
  try {
    const big = await shoal(['run', '-n', '1e9', '--oversubscribe', WORKER], { PID_DIR: dir });
    assert.is(big.code, 2);
    assert.match(big.stderr, /^shoal run: -n must be an integer in 1\.\.1024, got "1e9"\n$/);
    const n = 4 * availableParallelism() + 1;
    const over = await shoal(['run', '-n', String(n), WORKER], { PID_DIR: dir });
    assert.is(over.code, 2);
    assert.match(over.stderr, new RegExp(`^shoal run: -n ${n} is more than 4 workers per core on this host's ${availableParallelism()} core\\(s\\); pass --oversubscribe`));
    assert.equal(readdirSync(dir), [], 'no worker started');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('more workers than cores: a warning before the job starts (threads, so the test stays light)', async () => {
  const cores = availableParallelism();
  if (cores > 16) return; // the warning itself is covered by parseRunCommand's test with an injected core count
  const dir = mkdtempSync(join(tmpdir(), 'shoal-cli-'));
  try {
    const n = cores + 1;
    const env: Record<string, string> = { PID_DIR: dir };
    for (let r = 0; r < n; r++) env[`MODE_${r}`] = 'exit0';
    const r = await shoal(['run', '-n', String(n), '--threads', WORKER], env, 60_000);
    assert.is(r.code, 0, r.stderr);
    assert.match(r.stderr, new RegExp(`^shoal run: warning: ${n} workers on ${cores} core\\(s\\)`));
    const quiet = await shoal(['run', '-n', '1', WORKER], { PID_DIR: dir, MODE_0: 'exit0' });
    assert.is(quiet.code, 0, quiet.stderr);
    assert.not.match(quiet.stderr, /warning/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('user errors are one line without a stack trace; SHOAL_DEBUG=1 shows it', async () => {
  const r = await shoal(['run', '-n', '2', 'does-not-exist.js']);
  assert.is(r.code, 1);
  assert.match(r.stderr, /^shoal: .*does-not-exist\.js does not exist/);
  assert.is(r.stderr.trim().split('\n').length, 1, r.stderr);
  assert.ok(noStack(r.stderr), r.stderr);
  const d = await shoal(['run', '-n', '2', 'does-not-exist.js'], { SHOAL_DEBUG: '1' });
  assert.is(d.code, 1);
  assert.match(d.stderr, /does-not-exist\.js does not exist\n\s+at /);
});

test('a rank that never joins: the job fails naming it', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'shoal-cli-'));
  try {
    const r = await shoal(['run', '-n', '3', '--timeout-ms', '1500', '--grace-ms', '500', WORKER], { PID_DIR: dir, MODE_0: 'group', MODE_1: 'group', MODE_2: 'hang' }, 40_000);
    assert.is.not(r.code, 0);
    assert.match(r.stderr, /shoal run: rank [01] failed/);
    assert.match(r.stderr, /rank [01]: rank 2 never joined the group \(store key pair\/[01]-2\) within 1500 ms/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the bench suites: --help on each from its option table; typos in suites and options get a suggestion', async () => {
  const BENCH = `${ROOT}bench/dist/cli.js`;
  for (const suite of ['transport', 'allreduce', 'ps', 'datasets', 'train', 'spark', 'micro', 'tensorboard', 'cluster']) {
    const r = await runNode([BENCH, suite, '--help'], { timeoutMs: 60_000 });
    assert.is(r.code, 0, `${suite}: ${r.stderr}`);
    assert.match(r.stdout, new RegExp(`^usage: bench ${suite} \\[options\\]`));
    assert.match(r.stdout, /-h, --help/);
  }
  const top = await runNode([BENCH, '--help'], { timeoutMs: 20_000 });
  assert.is(top.code, 0);
  assert.match(top.stdout, /suites: transport, allreduce, ps/);
  const typo = await runNode([BENCH, 'trian'], { timeoutMs: 20_000 });
  assert.is(typo.code, 2);
  assert.match(typo.stderr, /^bench: unknown suite "trian" \(did you mean train\?\)/);
  const opt = await runNode([BENCH, 'ps', '--sizez', '5'], { timeoutMs: 20_000 });
  assert.is(opt.code, 2);
  assert.is(opt.stderr, 'bench ps: unknown option --sizez (did you mean --sizes?); see bench ps --help\n');
});

test.run();
