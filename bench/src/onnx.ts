/**
 * `npm run bench -- onnx [--steps 30] [--warmup 5] [--threads 1] [--no-anchor] [--out FILE]`
 *
 * Training step time of shoal's ONNX path (OnnxTrainer: generated backward graph run by onnxruntime-node)
 * against tfjs-wasm with shoal's kernels (the tfjs Trainer) and a plain PyTorch CPU loop with the same thread
 * count, on the models of `anchors/onnx_torch.py` (MLP 784-512-256-10 batch 128, a small CNN batch 64, the
 * embedding recommender batch 1024). The anchor script exports the ONNX files shoal trains, so the three
 * frameworks train the same architectures. Also 2 in-process workers over the memory ring, and
 * `shoal run -n 1|2` jobs (separate processes, ring) for ONNX and tfjs.
 * Writes bench/results/onnx.json (format in bench/README.md).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { LocalSync, RingSync, type GradientSync } from '@shoal/backends';
import { memoryGroups } from '@shoal/backends/testing';
import { setupTfjs } from '@shoal/wrappers';
import { launch } from '@shoal/run';
import { Writable } from 'node:stream';
import { onnxRun, tfjsRun, type Name, type Row } from './onnx-models.js';

const RESULTS = fileURLToPath(new URL('../results/onnx.json', import.meta.url));
const ANCHOR = fileURLToPath(new URL('../anchors/onnx_torch.py', import.meta.url));

const WORKER = fileURLToPath(new URL('./onnx-worker.js', import.meta.url));

/** One `shoal run -n workers --backend ring` job of onnx-worker.js; rank 0's BENCH row. */
async function launched(framework: Row['framework'], name: Name, file: string, workers: number, steps: number, warmup: number, threads: number): Promise<Omit<Row, 'model' | 'framework'>> {
  let out = '';
  const sink = new Writable({ write: (c, _e, cb) => ((out += c), cb()) });
  const args = ['--framework', framework, '--model', name, '--file', file, '--steps', String(steps), '--warmup', String(warmup), '--threads', String(threads)];
  const r = await launch({ script: WORKER, args, numWorkers: workers, backend: 'ring', stdout: sink, stderr: sink, jobTimeoutMs: 600_000, timeoutMs: 120_000 });
  if (r.code !== 0) throw new Error(`rank ${r.failedRank} failed: ${r.error ?? out.slice(-500)}`);
  const line = out.split('\n').find((l) => l.includes('BENCH '));
  if (!line) throw new Error(`no BENCH line in the output: ${out.slice(-500)}`);
  return JSON.parse(line.slice(line.indexOf('BENCH ') + 6));
}

async function ring(n: number): Promise<GradientSync[]> {
  if (n === 1) return [new LocalSync()];
  return (await memoryGroups(n, { timeoutMs: 60_000 })).map((g) => new RingSync(g));
}

export const command = {
  name: 'bench onnx',
  synopsis: '[options]',
  description: 'ONNX training step time and 2-worker samples/s against tfjs-wasm and PyTorch CPU',
  options: {
    'steps': { type: 'string', arg: 'N', help: 'timed steps (default 30)' },
    'warmup': { type: 'string', arg: 'N', help: 'warm-up steps (default 5)' },
    'threads': { type: 'string', arg: 'N', help: 'threads for ORT and PyTorch (default 1)' },
    'no-anchor': { type: 'boolean', help: 'drop the PyTorch timings' },
    'no-launch': { type: 'boolean', help: 'skip the shoal run (separate processes) rows' },
    'out': { type: 'string', arg: 'FILE', help: `results file (default ${RESULTS})` },
  },
} as const satisfies CommandSpec;

export async function run(args: string[]): Promise<void> {
  const parsed = parseCommand(command, args).values;
  const o = { ...parsed, 'no-anchor': parsed['no-anchor'] ?? false, 'no-launch': parsed['no-launch'] ?? false, out: parsed['out'] ?? RESULTS };
  const steps = Number(parsed['steps'] ?? '30');
  const warmup = Number(parsed['warmup'] ?? '5');
  const threads = Number(parsed['threads'] ?? '1');
  const started = new Date().toISOString();
  const dir = mkdtempSync(join(tmpdir(), 'shoal-onnx-bench-'));
  const rows: Row[] = [];
  const errors: string[] = [];
  try {
    // The anchor exports the models (so it must run even with --no-anchor, only its timings are then dropped).
    console.log(`onnx bench: ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}; exporting models and timing PyTorch (${threads} thread(s))`);
    const out = execFileSync('/usr/bin/python3', [ANCHOR, '--export', dir, '--threads', String(threads), '--steps', String(steps), '--warmup', String(warmup)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 600_000 });
    const torch = JSON.parse(out.trim().split('\n').pop()!) as { torch: string; models: Record<Name, { batch: number; step_ms: number; cpu_ms_per_step: number; samples_per_sec: number }> };
    for (const [m, r] of Object.entries(torch.models)) console.log(`  ${m} torch x1: ${r.step_ms.toFixed(2)} ms/step (${r.cpu_ms_per_step.toFixed(2)} CPU ms)`);
    if (!o['no-anchor']) for (const [m, r] of Object.entries(torch.models)) rows.push({ model: m as Name, framework: 'torch', workers: 1, batch_per_worker: r.batch, steps, step_ms: r.step_ms, cpu_ms_per_step: r.cpu_ms_per_step, samples_per_sec: r.samples_per_sec, threads });
    const rt = await setupTfjs({ backend: 'wasm' });
    for (const name of ['mlp', 'cnn', 'rec'] as Name[]) {
      for (const workers of [1, 2]) {
        const attempt = async (framework: Row['framework'], go: () => Promise<Omit<Row, 'model' | 'framework'>>) => {
          try {
            const r: Row = { model: name, framework, ...(await go()) };
            rows.push(r);
            console.log(`  ${name} ${framework} x${workers}: ${r.step_ms.toFixed(2)} ms/step (${r.cpu_ms_per_step.toFixed(2)} CPU ms), ${Math.round(r.samples_per_sec)} samples/s`);
          } catch (e) {
            errors.push(`${framework} ${name} x${workers}: ${(e as Error).message}`);
            console.log(`  ${name} ${framework} x${workers}: failed: ${(e as Error).message}`);
          }
        };
        await attempt('onnx', async () => onnxRun(join(dir, `${name}.onnx`), name, await ring(workers), steps, warmup, threads));
        await attempt('tfjs-wasm', async () => tfjsRun(rt, name, await ring(workers), steps, warmup));
      }
      // Separate processes (ORT's run and tfjs-wasm both compute on the calling thread, so in-process workers
      // take turns): `shoal run -n 1` and `-n 2` over the ring.
      if (!o['no-launch']) {
        for (const workers of [1, 2]) {
          for (const framework of ['onnx', 'tfjs-wasm'] as const) {
            if (framework === 'tfjs-wasm' && name === 'cnn') continue;
            try {
              const r: Row = { model: name, framework, ...(await launched(framework, name, join(dir, `${name}.onnx`), workers, steps, warmup, threads)), processes: workers };
              rows.push(r);
              console.log(`  ${name} ${framework} x${workers} (processes): ${r.step_ms.toFixed(2)} ms/step (rank 0: ${r.cpu_ms_per_step.toFixed(2)} CPU ms), ${Math.round(r.samples_per_sec)} samples/s`);
            } catch (e) {
              errors.push(`${framework} ${name} x${workers} processes: ${(e as Error).message}`);
            }
          }
        }
      }
    }
    const ratios: Record<string, number> = {};
    const find = (m: Name, f: Row['framework'], w: number, procs = false) => rows.find((r) => r.model === m && r.framework === f && r.workers === w && (r.processes !== undefined) === procs);
    for (const m of ['mlp', 'cnn', 'rec'] as Name[]) {
      const on = find(m, 'onnx', 1);
      const tf = find(m, 'tfjs-wasm', 1);
      const pt = find(m, 'torch', 1);
      if (on && tf) ratios[`${m}_onnx_vs_tfjs`] = tf.step_ms / on.step_ms;
      if (on && pt) ratios[`${m}_onnx_vs_torch`] = pt.step_ms / on.step_ms;
      if (on && tf) ratios[`${m}_onnx_vs_tfjs_cpu`] = tf.cpu_ms_per_step / on.cpu_ms_per_step;
      if (on && pt) ratios[`${m}_onnx_vs_torch_cpu`] = pt.cpu_ms_per_step / on.cpu_ms_per_step;
      const on2 = find(m, 'onnx', 2);
      if (on && on2) ratios[`${m}_onnx_2v1_in_process`] = on2.samples_per_sec / on.samples_per_sec;
      for (const f of ['onnx', 'tfjs-wasm'] as const) {
        const [p1, p2] = [find(m, f, 1, true), find(m, f, 2, true)];
        if (p1 && p2) ratios[`${m}_${f}_2v1_processes`] = p2.samples_per_sec / p1.samples_per_sec;
      }
      const [o2, t2] = [find(m, 'onnx', 2, true), find(m, 'tfjs-wasm', 2, true)];
      if (o2 && t2) ratios[`${m}_onnx_vs_tfjs_2_processes`] = o2.samples_per_sec / t2.samples_per_sec;
    }
    const result = { suite: 'onnx', version: 1, started, host: { cpus: cpus().length, node: process.version, loadavg1: loadavg()[0] }, torch: torch.torch, tfjs: rt.describe(), rows, ratios, errors };
    mkdirSync(join(o.out!, '..'), { recursive: true });
    writeFileSync(o.out!, `${JSON.stringify(result, null, 1)}\n`);
    console.log(`ratios (> 1: ONNX faster): ${JSON.stringify(ratios)}`);
    if (errors.length) console.log(`errors: ${errors.join('; ')}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
