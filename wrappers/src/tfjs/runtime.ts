import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tfjs from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import { registerShoalKernels, type ShoalKernels } from './kernels.js';
import { registerFileRouters } from './model-io.js';

/** The tfjs namespace shoal trains with (the `@tensorflow/tfjs` module; tfjs-node registers into the same core). */
export type Tf = typeof tfjs;

/** Which tfjs engine runs the math. `cpu` is the pure-JS reference backend: never picked unless asked for. */
export type TfjsBackendName = 'tensorflow' | 'wasm' | 'cpu';

export interface TfjsRuntimeOptions {
  /**
   * `auto` (default): `@tensorflow/tfjs-node` when it is installed, else wasm with SIMD. `wasm` forces wasm even
   * when tfjs-node is present; `cpu` is for tests that compare against the reference kernels.
   */
  backend?: 'auto' | 'node' | 'wasm' | 'cpu';
  /** Register shoal's kernel fixes (default true). */
  kernels?: boolean;
}

export interface TfjsRuntime {
  readonly tf: Tf;
  /** The active tfjs backend name, as `tf.getBackend()` reports it. */
  readonly backend: TfjsBackendName;
  /** Whether the wasm binary in use has SIMD (always false for other backends). */
  readonly simd: boolean;
  /** The kernels shoal registered (empty when `kernels: false` or on tfjs-node). */
  readonly kernels: ShoalKernels;
  /** One line for logs: `tfjs 4.22.0 on wasm (simd, 1 thread)`. */
  describe(): string;
}

/** Absolute path of the folder holding tfjs-backend-wasm's .wasm binaries (they ship in the npm package). */
export function wasmBinaryDir(): string {
  const require = createRequire(import.meta.url);
  return join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + '/';
}

async function tryTfjsNode(): Promise<boolean> {
  try {
    // Optional dependency: its install downloads libtensorflow, so it is often absent. The specifier is a
    // variable so TypeScript does not require its types.
    const name = '@tensorflow/tfjs-node';
    await import(name);
    return true;
  } catch {
    return false;
  }
}

/**
 * Pick and initialise the tfjs backend for this process, then register shoal's kernel fixes.
 *
 * Order for `auto`: tfjs-node (native TensorFlow) when installed, else wasm with SIMD, single-threaded
 * (multi-threaded wasm needs browser workers, not available in Node). Throws ERR_CONFIG if the requested
 * backend cannot start; never silently falls back to the slow cpu backend.
 *
 * Also makes `file://` URLs work for `model.save` / `tf.loadLayersModel` when tfjs-node is absent (see
 * `registerFileRouters`).
 *
 * The tfjs engine is per process (tfjs keeps it in a module-level registry): call this once per worker process.
 */
export async function setupTfjs(options: TfjsRuntimeOptions = {}): Promise<TfjsRuntime> {
  const want = options.backend ?? 'auto';
  const tf = tfjs;
  // tfjs's cpu backend prints a "you are running TensorFlow.js in Node.js, install tfjs-node" banner on its first
  // write; shoal has already chosen the backend, so mark it as seen.
  const cpu = tf.findBackend('cpu') as { firstUse?: boolean } | null;
  if (cpu && 'firstUse' in cpu) cpu.firstUse = false;
  let backend: TfjsBackendName;
  if ((want === 'auto' || want === 'node') && (await tryTfjsNode())) {
    await tf.setBackend('tensorflow');
    backend = 'tensorflow';
  } else if (want === 'node') {
    throw Errors.config('backend', '@tensorflow/tfjs-node was requested but is not installed (npm install @tensorflow/tfjs-node)');
  } else if (want === 'cpu') {
    await tf.setBackend('cpu');
    backend = 'cpu';
  } else {
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    wasm.setWasmPaths(wasmBinaryDir());
    // One thread: the threaded build needs SharedArrayBuffer workers that Node's wasm loader does not provide.
    wasm.setThreadsCount(1);
    const ok = await tf.setBackend('wasm');
    if (!ok) throw Errors.config('backend', `tfjs wasm backend failed to initialise (wasm files in ${wasmBinaryDir()})`);
    backend = 'wasm';
  }
  await tf.ready();
  if (tf.getBackend() !== backend) throw Errors.state(`tfjs backend is ${tf.getBackend()} after selecting ${backend}`);
  const simd = backend === 'wasm' && Boolean(tf.env().getBool('WASM_HAS_SIMD_SUPPORT'));
  const kernels = options.kernels === false ? emptyKernels() : registerShoalKernels(tf);
  registerFileRouters(tf); // file:// save/load without tfjs-node
  return {
    tf,
    backend,
    simd,
    kernels,
    describe: () =>
      `tfjs ${tf.version.tfjs} on ${backend}${backend === 'wasm' ? ` (${simd ? 'simd' : 'no simd'}, 1 thread)` : ''}` +
      (kernels.registered.length ? `; shoal kernels: ${kernels.registered.join(', ')}` : ''),
  };
}

/** The name of the tfjs backend in use right now (`tf.getBackend()`), typed. */
export function activeTfjsBackend(tf: Tf = tfjs): TfjsBackendName {
  return tf.getBackend() as TfjsBackendName;
}

function emptyKernels(): ShoalKernels {
  return { registered: [], restore() {} };
}
