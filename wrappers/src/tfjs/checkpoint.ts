import { mkdir, open, readFile, readdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Errors } from '@shoal/core';

/** One saved array: float32 values (int32 weights are stored as float32; exact below 2^24). */
export interface SavedArray {
  name: string;
  shape: number[];
  data: Float32Array;
}

export interface CheckpointState {
  /** Epochs completed; training resumes at this epoch index. */
  epoch: number;
  /** Optimizer steps taken so far. */
  step: number;
  weights: SavedArray[];
  optimizer: SavedArray[];
  /** Free-form JSON the trainer adds (loss history, world size). */
  extra?: Record<string, unknown>;
}

const FORMAT = 'shoal-checkpoint-v1';

async function writeDurable(path: string, data: Uint8Array | string): Promise<void> {
  const fh = await open(path, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

function pack(arrays: SavedArray[]): Uint8Array {
  const total = arrays.reduce((s, a) => s + a.data.length, 0);
  const out = new Float32Array(total);
  let off = 0;
  for (const a of arrays) {
    out.set(a.data, off);
    off += a.data.length;
  }
  return new Uint8Array(out.buffer);
}

/**
 * Write a checkpoint under `dir` atomically: the files go to a temporary folder that is renamed to
 * `ckpt-<epoch>` once complete and fsynced, then the `latest` pointer is replaced by rename. A crash at any
 * point leaves the previous checkpoint readable. Keeps the newest `keep` checkpoints.
 */
export async function saveCheckpoint(dir: string, state: CheckpointState, keep = 2): Promise<string> {
  await mkdir(dir, { recursive: true });
  const name = `ckpt-${String(state.epoch).padStart(6, '0')}-${String(state.step).padStart(9, '0')}`;
  const tmp = join(dir, `.tmp-${name}-${process.pid}-${Date.now()}`);
  await mkdir(tmp);
  const meta = {
    format: FORMAT,
    epoch: state.epoch,
    step: state.step,
    weights: state.weights.map((a) => ({ name: a.name, shape: a.shape })),
    optimizer: state.optimizer.map((a) => ({ name: a.name, shape: a.shape })),
    extra: state.extra ?? {},
  };
  await writeDurable(join(tmp, 'weights.bin'), pack(state.weights));
  await writeDurable(join(tmp, 'optimizer.bin'), pack(state.optimizer));
  await writeDurable(join(tmp, 'meta.json'), JSON.stringify(meta, null, 1));
  await rm(join(dir, name), { recursive: true, force: true });
  await rename(tmp, join(dir, name));
  await writeDurable(join(dir, '.latest.tmp'), name);
  await rename(join(dir, '.latest.tmp'), join(dir, 'latest'));
  const all = (await readdir(dir)).filter((f) => f.startsWith('ckpt-')).sort();
  for (const old of all.slice(0, Math.max(0, all.length - keep))) await rm(join(dir, old), { recursive: true, force: true });
  return join(dir, name);
}

function unpack(bytes: Uint8Array, specs: Array<{ name: string; shape: number[] }>, file: string): SavedArray[] {
  const total = specs.reduce((s, a) => s + a.shape.reduce((p, d) => p * d, 1), 0);
  if (bytes.byteLength !== total * 4) throw Errors.data(file, `holds ${bytes.byteLength} bytes, meta.json describes ${total * 4}`);
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
  let off = 0;
  return specs.map((s) => {
    const n = s.shape.reduce((p, d) => p * d, 1);
    const data = all.slice(off, off + n);
    off += n;
    return { name: s.name, shape: s.shape, data };
  });
}

/** Read the newest checkpoint under `dir`, or null if there is none. Throws ERR_DATA on a corrupt one. */
export async function loadCheckpoint(dir: string): Promise<CheckpointState | null> {
  let name: string;
  try {
    name = (await readFile(join(dir, 'latest'), 'utf8')).trim();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
  const base = join(dir, name);
  const meta = JSON.parse(await readFile(join(base, 'meta.json'), 'utf8'));
  if (meta.format !== FORMAT) throw Errors.data(join(base, 'meta.json'), `unknown format ${JSON.stringify(meta.format)}`);
  return {
    epoch: meta.epoch,
    step: meta.step,
    weights: unpack(await readFile(join(base, 'weights.bin')), meta.weights, join(base, 'weights.bin')),
    optimizer: unpack(await readFile(join(base, 'optimizer.bin')), meta.optimizer, join(base, 'optimizer.bin')),
    extra: meta.extra,
  };
}

