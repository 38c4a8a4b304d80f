#!/usr/bin/env node
/**
 * `npm run bench -- <suite> [args...]` (after a build: `node bench/dist/cli.js <suite> [args...]`).
 * Each suite is `bench/src/<suite>.ts` exporting `run(args)` and writing `bench/results/<suite>.json`; see
 * bench/README.md. Add a suite with one line in the table below.
 *
 * `npm run bench [-- --quick] [--suites a,b]` (no suite name): every suite of `ALL` in turn, then the report.
 * Full runs write bench/results/<suite>.json and bench/report.md; `--quick` runs each suite at its CI size (the
 * `ALL` table) into bench/results/quick/ (not committed), report included. A suite that fails is reported and
 * the others still run; the exit code is then 1.
 */
import { benchAuth } from './bench-auth.js';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { helpText, parseCommand, runCommand, suggest, UsageError, type CommandSpec } from '@shoal/run/cli';

interface Suite {
  /** The suite's options: its parser and its `--help`. */
  command: CommandSpec;
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
  timeline: () => import('./timeline.js'),
  'ps-rounds': () => import('./ps-rounds.js'),
  cluster: () => import('./cluster.js'),
  onnx: () => import('./onnx.js'),
  soak: () => import('./soak.js'),
  security: () => import('./security.js'),
  report: () => import('./report.js'),
  faults: () => import('./faults.js'),
};

/**
 * The suites `npm run bench` runs, in order, with their CI-sized arguments for `--quick`. Left out: tensorboard, timeline, ps-rounds,
 * onnx and soak (run them by name), report (it runs last on its own).
 */
const ALL: Record<string, string[]> = {
  micro: ['--time-ms', '100'],
  transport: ['--quick'],
  allreduce: ['--max-bytes', '1048576', '--ns', '2'],
  ps: ['--quick'],
  datasets: ['--rows', '100000', '--reps', '1'],
  train: ['--quick'],
  spark: ['--quick'],
  cluster: ['--quick'],
};

async function runAll(quick: boolean, pick: string[]): Promise<number> {
  const bad = pick.filter((s) => !(s in ALL));
  if (bad.length) throw new UsageError(`bench: --suites: unknown ${bad.join(', ')}; available: ${Object.keys(ALL).join(', ')}`);
  const root = fileURLToPath(new URL('../', import.meta.url));
  const dir = quick ? join(root, 'results', 'quick') : join(root, 'results');
  mkdirSync(dir, { recursive: true }); // suites write their file there (not all create its folder)
  const failed: string[] = [];
  for (const name of pick) {
    console.log(`\n=== bench ${name}${quick ? ' (quick)' : ''}`);
    try {
      await (await suites[name]!()).run([...(quick ? ALL[name]! : []), '--out', join(dir, `${name}.json`)]);
    } catch (e) {
      failed.push(name);
      console.error(`bench ${name} failed: ${e instanceof Error ? e.message : String(e)}`);
    }
  }
  await (await suites.report!()).run(['--results', dir, '--out', quick ? join(dir, 'report.md') : join(root, 'report.md')]);
  if (failed.length) console.error(`failed suites: ${failed.join(', ')} (listed as missing in the report)`);
  return failed.length ? 1 : 0;
}

const BENCH = {
  name: 'bench',
  synopsis: '<suite> [options]',
  description:
    `suites: ${Object.keys(suites).join(', ')}\n\`npm run bench -- <suite> --help\` lists a suite's options.\n` +
    `Without a suite: ${Object.keys(ALL).join(', ')} in turn, then the report (bench/report.md).`,
  positionals: 'command',
  options: {
    quick: { type: 'boolean', help: 'without a suite: every suite at CI size into bench/results/quick/' },
    suites: { type: 'string', arg: 'A,B', help: 'without a suite: only these suites' },
  },
} as const satisfies CommandSpec;

async function main(argv: string[]): Promise<number> {
  const top = parseCommand(BENCH, argv);
  if (top.help) {
    process.stdout.write(`${helpText(BENCH)}\n`);
    return 0;
  }
  if (top.script === undefined) return runAll(top.values.quick === true, top.values.suites?.split(',') ?? Object.keys(ALL));
  if (top.values.quick !== undefined || top.values.suites !== undefined) throw new UsageError('bench: --quick and --suites before a suite name are for running every suite; give a suite its own --quick after its name');
  const name = top.script;
  const load = suites[name];
  if (!load) {
    const guess = suggest(name, Object.keys(suites));
    throw new UsageError(`bench: unknown suite ${JSON.stringify(name)}${guess ? ` (did you mean ${guess}?)` : ''}; available: ${Object.keys(suites).join(', ')}`);
  }
  // One job secret for the whole run, in this process's environment: every process a suite starts (workers,
  // servers, peers, namespace hosts) inherits it, as a launcher's children do.
  benchAuth();
  const suite = await load();
  // Parsed here first so a mistake or --help costs nothing (the suite parses the same table again).
  if (parseCommand(suite.command, top.scriptArgs).help) {
    process.stdout.write(`${helpText(suite.command)}\n`);
    return 0;
  }
  await suite.run(top.scriptArgs);
  return 0;
}

runCommand('bench', () => main(process.argv.slice(2)));
