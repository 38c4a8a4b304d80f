#!/usr/bin/env node
/**
 * Merge a timeline whose parts were gathered from several hosts (the Spark driver does this for
 * `shoal_spark.run(..., timeline=PATH)`; a user may do it with parts copied from the hosts of a `shoal run --hosts`
 * job that shared no folder):
 *
 *   node run/dist/launcher/timeline-merge.js FILE
 *
 * joins every part beside FILE (`FILE.rank-<r>.jsonl`, `FILE.server-<i>.jsonl`, as `timelinePartPath` names them)
 * into FILE with `mergeTimeline` (each rank shifted by its recorded clock offset), removes the parts, and prints
 * one JSON line on stdout: `{"spans", "pids", "missing", "clockOffsets"}`. Exit code 2 with one line on a usage
 * mistake or when no part is found.
 */
import { readdirSync } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { mergeTimeline, timelinePartPath } from '@shoal/core/telemetry';
import { exitCodeOf, formatCommandError, helpText, parseCommand, UsageError, type CommandSpec } from '../cli/command.js';

const MERGE_COMMAND = {
  name: 'timeline-merge',
  synopsis: 'FILE',
  description: 'Merge the parts FILE.rank-<r>.jsonl and FILE.server-<i>.jsonl beside FILE into the Chrome trace FILE (and remove them).',
  positionals: 'list',
  options: {},
} as const satisfies CommandSpec;

/** The parts of `file` found in its folder: ranks in rank order, then servers in index order. */
function timelineParts(file: string): string[] {
  const base = basename(file);
  const found: Array<{ kind: number; n: number; who: string }> = [];
  let names: string[];
  try {
    names = readdirSync(dirname(file));
  } catch (e) {
    throw new UsageError(`${MERGE_COMMAND.name}: cannot read the folder of ${file}: ${(e as Error).message}`);
  }
  for (const name of names) {
    if (!name.startsWith(`${base}.`) || !name.endsWith('.jsonl')) continue;
    const m = /^(rank|server)-(\d+)$/.exec(name.slice(base.length + 1, -'.jsonl'.length));
    if (m) found.push({ kind: m[1] === 'rank' ? 0 : 1, n: Number(m[2]), who: `${m[1]}-${m[2]}` });
  }
  found.sort((a, b) => a.kind - b.kind || a.n - b.n);
  return found.map((f) => timelinePartPath(file, f.kind === 0 ? f.n : f.who));
}

async function main(argv: readonly string[]): Promise<number> {
  const { help, positionals } = parseCommand(MERGE_COMMAND, argv);
  if (help) {
    process.stdout.write(`${helpText(MERGE_COMMAND)}\n`);
    return 0;
  }
  if (positionals.length !== 1) throw new UsageError(`${MERGE_COMMAND.name}: expected one FILE, got ${positionals.length} argument(s)`);
  const file = resolve(positionals[0]!);
  const parts = timelineParts(file);
  if (parts.length === 0) throw new UsageError(`${MERGE_COMMAND.name}: no part ${basename(file)}.rank-<r>.jsonl in ${dirname(file)}`);
  const m = await mergeTimeline(file, parts, { remove: true });
  process.stdout.write(`${JSON.stringify(m)}\n`);
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (e: unknown) => {
    process.stderr.write(formatCommandError(MERGE_COMMAND.name, e));
    process.exit(exitCodeOf(e));
  },
);
