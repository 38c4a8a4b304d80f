import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';

// Issue 16: the demo's `--checkpoint DIR`. A run killed (SIGKILL of the whole process group: main, workers, server
// actor) and started again with the same command ends bit-identical to a run never interrupted: once inside a
// model-selection run, once inside the final run (hybrid, tables on the server); once more with the ring backend
// (tables replicated on the workers). A checkpoint of other flags is refused in one line.
const root = new URL('../../', import.meta.url).pathname;
const main = join(root, 'examples/recommender/dist/main.js');
const config = join(root, 'examples/recommender/configs/synthetic-ratings.json');
const dir = mkdtempSync(join(tmpdir(), 'rec-ckpt-'));
const cache = join(dir, 'cache');
// Model selection on (two learning rates, tower weights), 2 epochs of 6 steps per training run: 3 runs.
const flags = (out: string, extra: string[] = []): string[] => [main, '--config', config, '--epochs', '2', '--max-steps', '6', '--batch', '128', '--out', out, '--cache', cache, ...extra];

interface Train {
  epochs: Array<Record<string, unknown>>;
  final: unknown;
  selection: { runs: Array<Record<string, unknown>> } | null;
  lr: number;
  towerScale: number;
  showcase: unknown;
}

/** What must not depend on an interruption: every figure except timings and byte counts of the engine. */
function comparable(t: Train): unknown {
  const TIMING = new Set(['seconds', 'samplesPerSec', 'computeSeconds', 'syncSeconds', 'syncSecondsByRank', 'applySeconds', 'wireBytesPerStep', 'psWireBytesPerStep']);
  const strip = (o: Record<string, unknown>) => Object.fromEntries(Object.entries(o).filter(([k]) => !TIMING.has(k)));
  return { epochs: t.epochs.map(strip), final: t.final, selection: t.selection?.runs.map(strip), lr: t.lr, towerScale: t.towerScale };
}

const train = (out: string): Train => (JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as { train: Train }).train;

/** Start the demo; SIGKILL its process group once the checkpoint folder's `latest` names training run `run`. */
function killInRun(args: string[], ck: string, run: number, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    p.stdout.on('data', (d: Buffer) => { log += d; });
    p.stderr.on('data', (d: Buffer) => { log += d; });
    const want = `ckpt-${String(run).padStart(6, '0')}-`;
    let killed = false;
    const poll = setInterval(() => {
      const latest = join(ck, 'latest');
      if (!killed && existsSync(latest) && readFileSync(latest, 'utf8').startsWith(want)) {
        killed = true;
        process.kill(-p.pid!, 'SIGKILL');
      }
    }, 50);
    const timer = setTimeout(() => { process.kill(-p.pid!, 'SIGKILL'); reject(new Error(`no checkpoint of run ${run} within ${timeoutMs} ms\n${log}`)); }, timeoutMs);
    p.on('exit', (code, signal) => {
      clearInterval(poll); clearTimeout(timer);
      if (!killed) reject(new Error(`the demo ended (code ${code}, ${signal}) before a checkpoint of run ${run}\n${log}`));
      else resolve(readFileSync(join(ck, 'latest'), 'utf8'));
    });
  });
}

function run(args: string[]): { status: number | null; out: string } {
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', timeout: 240_000 });
  return { status: r.status, out: `${r.stdout}\n${r.stderr}` };
}

test('killed in a selection run and in the final run, resumed twice: the results equal an uninterrupted run', async () => {
  const ref = run(flags(join(dir, 'ref')));
  assert.is(ref.status, 0, ref.out);
  const ck = join(dir, 'ck');
  const args = flags(join(dir, 'a'), ['--checkpoint', ck, '--checkpoint-every-steps', '2']);
  // Run 1 is the second learning rate's selection run; run 2 the final run. Checkpoints fall after steps 2, 4, 8
  // and 10 of each run; one due after an epoch's last step (6) is written after the next step (7).
  const at1 = await killInRun(args, ck, 1, 240_000);
  assert.match(at1, /^ckpt-000001-/);
  // The same command resumes inside run 1, and is killed again inside the final run.
  assert.match(await killInRun(args, ck, 2, 240_000), /^ckpt-000002-/);
  const done = run(args);
  assert.is(done.status, 0, done.out);
  assert.match(done.out, /resuming from .*: training run 3 \(2 selection run\(s\) done\)/);
  assert.equal(comparable(train(join(dir, 'a'))), comparable(train(join(dir, 'ref'))));
});

test('ring backend (tables replicated on every worker): killed in the run, resumed, equal to an uninterrupted run', async () => {
  // lr, epochs and tower weight fixed: one training run (index 0), no selection.
  const ring = (out: string, extra: string[] = []) => flags(out, ['--backend', 'ring', '--lr', '0.01', '--tower-weight', '0.5', ...extra]);
  const ref = run(ring(join(dir, 'ring-ref')));
  assert.is(ref.status, 0, ref.out);
  const ck = join(dir, 'ring-ck');
  const args = ring(join(dir, 'ring-a'), ['--checkpoint', ck, '--checkpoint-every-steps', '2']);
  assert.match(await killInRun(args, ck, 0, 240_000), /^ckpt-000000-/);
  const done = run(args);
  assert.is(done.status, 0, done.out);
  assert.match(done.out, /resuming from .*: training run 1 \(0 selection run\(s\) done\)/);
  assert.equal(comparable(train(join(dir, 'ring-a'))), comparable(train(join(dir, 'ring-ref'))));
});

test('a checkpoint of another seed or worker count is refused in one line, before training', () => {
  const ck = join(dir, 'ck');
  assert.ok(existsSync(join(ck, 'latest')), 'the previous test left its checkpoint');
  for (const [extra, what] of [[['--seed', '2'], /--seed 1, this run has 2/], [['--workers', '1'], /--workers 2, this run has 1/]] as const) {
    const r = run(flags(join(dir, 'bad'), ['--checkpoint', ck, ...extra]));
    assert.is(r.status, 2, r.out);
    const line = r.out.split('\n').find((l) => l.startsWith('error: '));
    assert.ok(line, r.out);
    assert.match(line, /^error: --checkpoint .*ck was written by a run with /);
    assert.match(line, what);
    assert.not.match(r.out, /\n\s+at /, 'no stack trace');
    assert.not.match(r.out, /\[rank 0\]/, 'no worker started');
  }
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
