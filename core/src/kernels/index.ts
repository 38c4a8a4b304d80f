/** @shoal/core/kernels: element-wise reduction and optimizer kernels (the native addon, or the JS fallback). */
export { defaultKernelAddonPath, loadKernels, OP_CODES, type LoadKernelsOptions } from './reduce-kernels.js';
export type { FloatArray, NumericArray, OptimStep, ReduceKernels, ReduceOp, RowOp } from './kernel-types.js';
export { jsKernels } from './js-kernels.js';
export { requireNativeAddon } from '../native-addons.js';
