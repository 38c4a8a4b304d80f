import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { Errors } from '@shoal/core';
import type { Tf } from './model.js';

/** Start tfjs on the wasm backend (SIMD, one thread) with the .wasm files from the installed package. */
export async function startTfjsWasm(): Promise<Tf> {
  const wasm = await import('@tensorflow/tfjs-backend-wasm');
  const dir = join(dirname(createRequire(import.meta.url).resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist') + '/';
  wasm.setWasmPaths(dir);
  wasm.setThreadsCount(1);
  if (!(await tf.setBackend('wasm'))) throw Errors.config('backend', `tfjs wasm backend failed to initialise (wasm files in ${dir})`);
  await tf.ready();
  return tf;
}
