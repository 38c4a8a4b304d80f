import { createRequire } from 'node:module';

/**
 * Load one of core's N-API addons (`core/native/<name>`, built by `npm run build:native`) by name, for the
 * packages above core whose TypeScript side drives an addon built here (the shared-memory collective of
 * `@shoal/backends`). Throws what `require` throws when the addon is not built.
 */
export function requireNativeAddon<T>(name: 'shmcoll' | 'kernels' | 'shm' | 'nng'): T {
  return createRequire(import.meta.url)(`../native/${name}/build/Release/shoal_${name}.node`) as T;
}
