#!/usr/bin/env node
/**
 * `npm run bench -- <suite> [args...]` (after a build: `node bench/dist/cli.js <suite> [args...]`).
 * Each suite is `bench/src/<suite>.ts` exporting `run(args)` and writing `bench/results/<suite>.json`; see
 * bench/README.md. Add a suite with one line in the table below.
 *
 * `npm run bench [-- --quick] [--suites a,b]` (no suite name): every suite in turn, then the report. Full runs
 * write bench/results/<suite>.json and bench/report.md; `--quick` runs each suite at its CI size (the table
 * below) into bench/results/quick/ (not committed), report included. A suite that fails is reported and the
 * others still run; the exit code is then 1.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

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
  cluster: () => import('./cluster.js'),
  report: () => import('./report.js'),
};

/** Each suite's CI-sized arguments for `npm run bench -- --quick`. */
const QUICK: Record<string, string[]> = {
  micro: ['--time-ms', '100'],
  transport: ['--quick'],
  allreduce: ['--max-bytes', '1048576', '--ns', '2'],
  ps: ['--quick'],
  datasets: ['--rows', '100000', '--reps', '1'],
  train: ['--quick'],
  spark: ['--quick'],
  cluster: ['--quick'],
};

async function runAll(args: string[]): Promise<number> {
  const quick = args.includes('--quick');
  const i = args.indexOf('--suites');
  const pick = i >= 0 ? (args[i + 1] ?? '').split(',') : Object.keys(QUICK);
  const bad = pick.filter((s) => !(s in QUICK));
  if (bad.length) {
    console.error(`--suites: unknown ${bad.join(', ')}; available: ${Object.keys(QUICK).join(', ')}`);
    return 1;
  }
  const rest = args.filter((a, k) => a !== '--quick' && a !== '--suites' && args[k - 1] !== '--suites');
  if (rest.length) {
    console.error(`npm run bench (every suite) takes only --quick and --suites a,b; got ${rest.join(' ')}`);
    return 1;
  }
  const root = fileURLToPath(new URL('../', import.meta.url));
  const dir = quick ? join(root, 'results', 'quick') : join(root, 'results');
  mkdirSync(dir, { recursive: true }); // suites write their file there (not all create its folder)
  const failed: string[] = [];
  for (const name of pick) {
    console.log(`\n=== bench ${name}${quick ? ' (quick)' : ''}`);
    try {
      await (await suites[name]!()).run([...(quick ? QUICK[name]! : []), '--out', join(dir, `${name}.json`)]);
    } catch (e) {
      failed.push(name);
      console.error(`bench ${name} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  await (await suites.report!()).run(['--results', dir, '--out', quick ? join(dir, 'report.md') : join(root, 'report.md')]);
  if (failed.length) console.error(`failed suites: ${failed.join(', ')} (listed as missing in the report)`);
  return failed.length ? 1 : 0;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...args] = argv;
  if (name === '--help' || name === '-h') {
    console.log(`usage: npm run bench -- <suite> [args...]   one suite\n       npm run bench [-- --quick] [--suites a,b]   every suite, then the report\nsuites: ${Object.keys(suites).join(', ')}`);
    return 0;
  }
  if (name === undefined || name.startsWith('--')) return runAll(argv);
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
