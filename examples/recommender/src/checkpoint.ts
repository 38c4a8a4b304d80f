import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { GradientSync, KeyExport, ParameterState } from '@shoal/backends';
import { Errors } from '@shoal/core';
import { loadCheckpoint, saveCheckpoint, type SavedArray } from '@shoal/wrappers';
import type { RunCheckpoint, RunState } from './train.js';

/**
 * Step checkpoints of the demo's training job (`--checkpoint DIR`), resumed when the same command runs again.
 *
 * A checkpoint is written by rank 0 after a step, between that step's push settling and the next push: the
 * parameter servers then hold exactly that round, and no other rank can move them past it. It holds the dense
 * layers and their Adam state, the embedding tables with their optimizer state (server-held: read from the
 * servers, `EmbeddingTables.exportState`; replicated: rank 0's copy), the position (run, epoch, step), the epoch's
 * running sums, the finished epochs' stats, the early-stopping best state, and the model-selection runs done so
 * far. Files are written by the wrappers' `saveCheckpoint` (temporary folder, fsync, rename; `latest` names the
 * newest), so a kill at any point leaves the previous checkpoint readable.
 *
 * Sampling is seeded by epoch and step, so a resumed run draws what the uninterrupted run draws, and the restored
 * optimizer states make every later update the same: the run ends bit-identical (tested).
 */
export interface CheckpointSpec {
  dir: string;
  /** Write after every K steps of a run (null: not by steps). */
  everySteps: number | null;
  /** Write when this many seconds passed since the last one (null: not by time). */
  everySeconds: number | null;
  /** Checkpoints kept (default 2). */
  keep?: number;
}

/** What fixes a run's trajectory, by the flag that sets it: a checkpoint written under other values is refused. */
export type RunIdentity = Record<string, string | number | boolean>;


/** One model-selection run's figures (kept in a checkpoint so a resumed job reports every run). */
export interface SelectionRun {
  lr: number;
  validHr: number[];
  losses: number[];
  towerHr: { scale: number; hr: number }[];
  seconds: number;
}

/** The model-selection runs finished before the checkpoint (`runTraining`'s loop state). */
export interface JobProgress {
  /** Index of the training run in progress (selection runs first, then the final run). */
  run: number;
  runs: SelectionRun[];
  best: { hr: number; lr: number; epochs: number; scale: number };
}

interface Meta {
  identity: RunIdentity;
  job: JobProgress;
  position: Omit<RunState, 'dense' | 'denseOptimizer' | 'tables' | 'best'> & { best: { hr: number; epoch: number } | null };
  denseSteps: Record<string, number>;
  tables: { placement: 'server' | 'replicated'; keys: { key: string; version: number; state: string[] }[] };
  /** Arrays stored as float32 that are float64 in memory (integer counts, exact below 2^24). */
  float64: string[];
}

/**
 * Refuse a checkpoint in `dir` written under another identity, naming the first difference (ERR_INVALID_ARG:
 * one line, no stack). No checkpoint there: nothing to check. Reads only `latest` and its `meta.json`.
 */
export function checkCheckpoint(dir: string, identity: RunIdentity): void {
  let name: string;
  try {
    name = readFileSync(join(dir, 'latest'), 'utf8').trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw e;
  }
  let saved: RunIdentity | undefined;
  try {
    saved = (JSON.parse(readFileSync(join(dir, name, 'meta.json'), 'utf8')) as { extra?: { identity?: RunIdentity } }).extra?.identity;
  } catch (e) {
    throw Errors.invalidArg('--checkpoint', `${dir}: ${name}/meta.json is unreadable (${(e as Error).message})`);
  }
  if (saved === undefined) throw Errors.invalidArg('--checkpoint', `${dir} holds a checkpoint that is not the recommender demo's`);
  for (const k of new Set([...Object.keys(identity), ...Object.keys(saved)])) {
    if (saved[k] !== identity[k]) {
      throw Errors.invalidArg('--checkpoint', `${dir} was written by a run with ${k} ${JSON.stringify(saved[k] ?? 'unset')}, this run has ${JSON.stringify(identity[k] ?? 'unset')}: ` +
        'resume with the same flags, or give another folder');
    }
  }
}

function f32(name: string, a: Float32Array | Float64Array, float64: string[]): SavedArray {
  if (a instanceof Float32Array) return { name, shape: [a.length], data: a };
  const data = Float32Array.from(a);
  for (let i = 0; i < a.length; i++) if (data[i] !== a[i]) throw Errors.state(`checkpoint: ${name}[${i}] = ${a[i]} is not exact in float32`);
  float64.push(name);
  return { name, shape: [a.length], data };
}

/**
 * The job's checkpoints (every rank opens it; rank 0 writes). `open` loads the newest checkpoint, checks its
 * identity and that every rank sees the same one; `job` is the selection progress to resume from (null: start),
 * `forRun(i)` the hooks of training run i (its resume state when the checkpoint is inside run i).
 */
export class JobCheckpoint {
  private lastSave = performance.now();
  private lastSaveStep = 0;
  private jobNow: JobProgress | null = null;

  private constructor(
    private readonly spec: CheckpointSpec,
    private readonly identity: RunIdentity,
    readonly job: JobProgress | null,
    private readonly state: RunState | null,
  ) {}

  /** Collective: every rank loads `spec.dir` and they agree on the step (a folder only some ranks see is refused). */
  static async open(spec: CheckpointSpec, identity: RunIdentity, sync: GradientSync): Promise<JobCheckpoint> {
    checkCheckpoint(spec.dir, identity);
    const ck = await loadCheckpoint(spec.dir);
    const mine = ck ? ck.epoch * 1e9 + ck.step + 1 : 0;
    const [mean] = await sync.allreduceScalars(Float64Array.of(mine));
    if (mean !== mine) throw Errors.mismatch('resume', `rank ${sync.rank} found ${ck ? `run ${ck.epoch} step ${ck.step}` : 'no checkpoint'} in ${spec.dir}, the ranks disagree: is it visible to every rank?`, { rank: sync.rank });
    if (!ck) return new JobCheckpoint(spec, identity, null, null);
    const meta = ck.extra as unknown as Meta;
    const arr = new Map<string, Float32Array | Float64Array>();
    for (const a of [...ck.weights, ...ck.optimizer]) arr.set(a.name, meta.float64.includes(a.name) ? Float64Array.from(a.data) : a.data);
    const get = (n: string): Float32Array | Float64Array => {
      const a = arr.get(n);
      if (!a) throw Errors.data(spec.dir, `checkpoint lacks array ${n}`);
      return a;
    };
    const denseOptimizer: Record<string, ParameterState> = {};
    for (const [p, step] of Object.entries(meta.denseSteps)) {
      const state: ParameterState['state'] = {};
      for (const a of ck.optimizer) if (a.name.startsWith(`dense/${p}/`)) state[a.name.slice(`dense/${p}/`.length)] = get(a.name);
      denseOptimizer[p] = { state, step };
    }
    const keys: KeyExport[] = meta.tables.keys.map((k, i) => ({
      key: k.key, version: k.version, data: get(`tables/${i}`), state: Object.fromEntries(k.state.map((n) => [n, get(`tables/${i}/${n}`)])),
    }));
    const pos = meta.position;
    const nDense = ck.weights.filter((a) => a.name.startsWith('dense/')).length;
    const nTables = ck.weights.filter((a) => a.name.startsWith('best/tables/')).length;
    const state: RunState = {
      ...pos,
      dense: Array.from({ length: nDense }, (_, i) => get(`dense/${i}`) as Float32Array),
      denseOptimizer,
      tables: { placement: meta.tables.placement, keys },
      best: pos.best === null ? null : {
        ...pos.best,
        state: { tables: Array.from({ length: nTables }, (_, k) => get(`best/tables/${k}`) as Float32Array), dense: Array.from({ length: nDense }, (_, i) => get(`best/dense/${i}`) as Float32Array) },
      },
    };
    return new JobCheckpoint(spec, identity, meta.job, state);
  }

  /** The hooks of training run `run`; `progress` is the job's selection state to record with each checkpoint. */
  forRun(progress: JobProgress): RunCheckpoint {
    const resume = this.job !== null && this.job.run === progress.run ? this.state : null;
    this.jobNow = progress;
    this.lastSaveStep = resume?.globalStep ?? 0;
    return {
      resume,
      due: (globalStep) => {
        const s = this.spec;
        const bySteps = s.everySteps !== null && Math.floor(globalStep / s.everySteps) > Math.floor(this.lastSaveStep / s.everySteps);
        const bySeconds = s.everySeconds !== null && performance.now() - this.lastSave >= s.everySeconds * 1000;
        return bySteps || bySeconds;
      },
      save: (st) => this.save(st),
    };
  }

  private async save(st: RunState): Promise<void> {
    const float64: string[] = [];
    const weights: SavedArray[] = st.dense.map((d, i) => f32(`dense/${i}`, d, float64));
    st.tables.keys.forEach((k, i) => weights.push(f32(`tables/${i}`, k.data, float64)));
    if (st.best) {
      st.best.state.tables.forEach((t, k) => weights.push(f32(`best/tables/${k}`, t, float64)));
      st.best.state.dense.forEach((d, i) => weights.push(f32(`best/dense/${i}`, d, float64)));
    }
    const optimizer: SavedArray[] = [];
    const denseSteps: Record<string, number> = {};
    for (const [p, s] of Object.entries(st.denseOptimizer)) {
      denseSteps[p] = s.step;
      for (const [n, a] of Object.entries(s.state)) optimizer.push(f32(`dense/${p}/${n}`, a, float64));
    }
    st.tables.keys.forEach((k, i) => { for (const [n, a] of Object.entries(k.state)) optimizer.push(f32(`tables/${i}/${n}`, a, float64)); });
    const { dense: _d, denseOptimizer: _o, tables: _t, best, ...position } = st;
    const meta: Meta = {
      identity: this.identity, job: this.jobNow!, denseSteps, float64,
      position: { ...position, best: best ? { hr: best.hr, epoch: best.epoch } : null },
      tables: { placement: st.tables.placement, keys: st.tables.keys.map((k) => ({ key: k.key, version: k.version, state: Object.keys(k.state) })) },
    };
    // Named by run index (the `epoch` field orders the folders) and the run's step.
    await saveCheckpoint(this.spec.dir, { epoch: this.jobNow!.run, step: st.globalStep, weights, optimizer, extra: meta as unknown as Record<string, unknown> }, this.spec.keep ?? 2);
    this.lastSave = performance.now();
    this.lastSaveStep = st.globalStep;
  }
}
