#!/usr/bin/env node
/**
 * `npm run bench -- <suite> [args...]` (after a build: `node bench/dist/cli.js <suite> [args...]`).
 * Each suite is `bench/src/<suite>.ts` exporting `run(args)` and writing `bench/results/<suite>.json`; see
 * bench/README.md. Add a suite with one line in the table below.
 */
interface Suite {
  run(args: string[]): Promise<void>;
}

const suites: Record<string, () => Promise<Suite>> = {
  transport: () => import('./transport.js'),
  allreduce: () => import('./allreduce.js'),
  ps: () => import('./ps.js'),
  datasets: () => import('./datasets.js'),
  train: () => import('./train.js'),
  spark: () => import('./spark.js'),
  micro: () => import('./micro.js'),
  tensorboard: () => import('./tensorboard.js'),
  cluster: () => import('./cluster.js'),
  onnx: () => import('./onnx.js'),
};

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (!name || name === '--help' || name === '-h') {
    console.log(`usage: npm run bench -- <suite> [args...]\nsuites: ${Object.keys(suites).join(', ')}`);
    return name ? 0 : 1;
  }
  const load = suites[name];
  if (!load) {
    console.error(`unknown bench suite ${JSON.stringify(name)}; available: ${Object.keys(suites).join(', ')}`);
    return 1;
  }
  await (await load()).run(args);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    console.error(e instanceof Error ? e.stack ?? e.message : String(e));
    process.exit(1);
  },
);
