export * from './tfjs/runtime.js';
export * from './tfjs/kernels.js';
