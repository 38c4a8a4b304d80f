export * from './api.js';
export * from './ring/allreduce-hierarchical.js';
