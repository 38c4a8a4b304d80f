import { parseArgs } from 'node:util';

/**
 * One way to read a command line, for every shoal command (`shoal run`, the Spark store entry, the bench
 * suites): `node:util` `parseArgs` underneath, plus what it lacks for a launcher: `--help` generated from the
 * option table, "did you mean" for unknown options, and, for commands that run a script, the split between the
 * command's own options and the script's (see `positionals: 'script'`).
 */
export interface OptionSpec {
  readonly type: 'string' | 'boolean';
  readonly short?: string;
  /** Placeholder of the value in the help (`N`, `MS`, `ADDR`). */
  readonly arg?: string;
  readonly help: string;
  /** Other spellings accepted for this option (e.g. `-np` for `-n`), not shown in the help. */
  readonly aliases?: readonly string[];
}

export interface CommandSpec<O extends Readonly<Record<string, OptionSpec>> = Readonly<Record<string, OptionSpec>>> {
  /** As typed, e.g. `shoal run`. Prefixes every error message. */
  readonly name: string;
  /** What follows the name in the usage line, e.g. `-n N [options] script.js [script args...]`. */
  readonly synopsis: string;
  readonly description?: string;
  readonly options: O;
  /**
   * `none` (default): no positional arguments. `list`: any number. `script`: the first positional argument is a
   * script; the command's options end there and everything after it goes to the script, like horovodrun and
   * torchrun; `--` also ends the command's options (the script follows it). One of the command's own options
   * written after the script is an error (it would silently go to the script): the user moves it before the
   * script, or writes `--` before the script to hand it to the script. `command`: the same split for a
   * command with subcommands (`shoal run ...`), without that check (the subcommand parses its own options).
   */
  readonly positionals?: 'none' | 'list' | 'script' | 'command';
  /** Text after the option list (examples, notes). */
  readonly epilog?: string;
}

export type OptionValues<O extends Readonly<Record<string, OptionSpec>>> = {
  -readonly [K in keyof O]?: O[K]['type'] extends 'boolean' ? boolean : string;
};

export interface ParsedCommand<O extends Readonly<Record<string, OptionSpec>>> {
  readonly values: OptionValues<O>;
  /** `--help` or `-h` was given: print `helpText(spec)` and do nothing else. */
  readonly help: boolean;
  /** Positional arguments (`list` mode). */
  readonly positionals: string[];
  /** The script (`script` mode), or undefined when none was given. */
  readonly script?: string;
  /** The script's arguments (`script` mode). */
  readonly scriptArgs: string[];
}

/** A mistake on the command line: printed as one line naming it, exit code 2, no stack trace. */
export class UsageError extends Error {
  readonly code = 'ERR_USAGE';
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

const HELP: OptionSpec = { type: 'boolean', short: 'h', help: 'show this help and exit' };

function flagOf(name: string, o: OptionSpec): string {
  return o.short ? `-${o.short}, --${name}` : `--${name}`;
}

/** Edit distance counting a swap of two neighbours as one edit (optimal string alignment); option names only. */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let v = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) v = Math.min(v, d[i - 2]![j - 2]! + 1);
      d[i]![j] = v;
    }
  }
  return d[a.length]![b.length]!;
}

/**
 * The closest of `candidates` to `word`, when close enough to be a typo (edit distance at most a third of its
 * length, at least 1; or one is a prefix of the other), else undefined.
 */
export function suggest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestD = Infinity;
  for (const c of candidates) {
    const d = c.startsWith(word) || word.startsWith(c) ? Math.abs(c.length - word.length) * 0.5 : distance(word, c);
    if (d < bestD) (best = c), (bestD = d);
  }
  return best !== undefined && bestD <= Math.max(1, Math.ceil(Math.max(word.length, best.length) / 3)) ? best : undefined;
}

/** The `--help` text of a command. */
export function helpText(spec: CommandSpec): string {
  const rows = Object.entries({ ...spec.options, help: HELP }).map(([name, o]) => [`${flagOf(name, o)}${o.type === 'string' ? ` ${o.arg ?? 'VALUE'}` : ''}`, o.help] as const);
  const w = Math.min(30, Math.max(...rows.map(([f]) => f.length)) + 2);
  const lines = [`usage: ${spec.name} ${spec.synopsis}`];
  if (spec.description) lines.push('', spec.description);
  lines.push('', 'options:');
  for (const [f, h] of rows) lines.push(f.length + 2 > w ? `  ${f}\n  ${' '.repeat(w)}${h}` : `  ${f.padEnd(w)}${h}`);
  if (spec.epilog) lines.push('', spec.epilog);
  return lines.join('\n');
}

/**
 * Parse `argv` (without the command name) against `spec`. Throws `UsageError` naming the problem: an unknown
 * option (with the closest known one), a missing value, a value given to a switch, a stray argument, or (script
 * mode) one of the command's options after the script.
 */
export function parseCommand<O extends Readonly<Record<string, OptionSpec>>>(spec: CommandSpec<O>, argv: readonly string[]): ParsedCommand<O> {
  const options: Record<string, OptionSpec> = { ...spec.options, help: HELP };
  const alias = new Map<string, string>();
  for (const [name, o] of Object.entries(options)) for (const a of o.aliases ?? []) alias.set(a, `--${name}`);
  const takesValue = (tok: string): boolean => {
    if (tok.includes('=')) return false;
    const name = tok.startsWith('--') ? tok.slice(2) : Object.entries(options).find(([, o]) => o.short === tok.slice(1))?.[0];
    return name !== undefined && options[name]?.type === 'string' && (tok.startsWith('--') || tok.length === 2);
  };
  const mode = spec.positionals ?? 'none';
  // Where the command's own options end (script mode): at `--` or at the first argument that is not an option
  // or an option's value.
  let own: string[] = [];
  let script: string | undefined;
  let scriptArgs: string[] = [];
  let terminated = false;
  if (mode === 'script' || mode === 'command') {
    let i = 0;
    for (; i < argv.length; i++) {
      let a = argv[i]!;
      if (a === '--') {
        terminated = true;
        break;
      }
      a = alias.get(a) ?? a;
      if (!a.startsWith('-') || a === '-') break;
      own.push(a);
      if (takesValue(a) && i + 1 < argv.length) own.push(argv[++i]!);
    }
    const rest = argv.slice(terminated ? i + 1 : i);
    script = rest[0];
    scriptArgs = rest.slice(1);
  } else {
    own = argv.map((a) => alias.get(a) ?? a);
  }
  const parseOpts = Object.fromEntries(Object.entries(options).map(([k, o]) => [k, o.short ? { type: o.type, short: o.short } : { type: o.type }]));
  // Unknown options first, with a suggestion (parseArgs' own message has none).
  const { tokens } = parseArgs({ args: own, options: parseOpts, strict: false, allowPositionals: true, tokens: true });
  const names = Object.keys(options);
  for (const t of tokens) {
    if (t.kind !== 'option' || t.name in options) continue;
    const guess = t.rawName.startsWith('--') ? suggest(t.name, names) : undefined;
    throw new UsageError(`${spec.name}: unknown option ${t.rawName}${guess ? ` (did you mean --${guess}?)` : ''}; see ${spec.name} --help`);
  }
  let parsed: { values: Record<string, string | boolean | undefined>; positionals: string[] };
  try {
    parsed = parseArgs({ args: own, options: parseOpts, strict: true, allowPositionals: mode === 'list' }) as typeof parsed;
  } catch (e) {
    // parseArgs' messages, reworded: "Option '-n, --num-workers <value>' argument missing", "Option '--threads'
    // does not take an argument", "Unexpected argument 'x'. This command does not take positional arguments".
    const m = (e as Error).message
      .split('\n')[0]!
      .replace(/^Option '(?:-\w, )?([^' ]+)(?: <value>)?' argument missing$/, '$1 needs a value')
      .replace(/^Option '([^']+)' does not take an argument$/, '$1 is a switch and takes no value')
      .replace(/\. To specify a positional argument.*$/, '');
    throw new UsageError(`${spec.name}: ${m}; see ${spec.name} --help`);
  }
  const help = parsed.values.help === true;
  delete parsed.values.help;
  if (mode === 'script' && !terminated && !help) {
    // One of our options after the script would silently go to it (`shoal run -n 2 train.js --backend ps`).
    for (const a of scriptArgs) {
      if (a === '--') break;
      const long = /^--([^=]+)/.exec(a)?.[1];
      const short = /^-([^-])$/.exec(a)?.[1];
      const name = long !== undefined ? (long in spec.options ? long : undefined) : short !== undefined ? Object.entries(spec.options).find(([, o]) => o.short === short)?.[0] : undefined;
      if (name === undefined && !alias.has(a)) continue;
      throw new UsageError(
        `${spec.name}: ${a} comes after the script ${script}, so it would go to the script, not to ${spec.name}: put ${spec.name}'s options before the script, or write \`${spec.name} [options] -- ${script} ${a} ...\` to give it to the script`,
      );
    }
  }
  return { values: { ...parsed.values } as OptionValues<O>, help, positionals: parsed.positionals, ...(script === undefined ? {} : { script }), scriptArgs };
}

/** An integer option value in `[min, max]`, or a `UsageError` naming the option. */
export function intOption(command: string, flag: string, v: string, min: number, max = Number.MAX_SAFE_INTEGER): number {
  const x = Number(v);
  if (v.trim() === '' || !Number.isInteger(x) || x < min || x > max) {
    throw new UsageError(`${command}: ${flag} must be an integer in ${min}..${max}, got ${JSON.stringify(v)}`);
  }
  return x;
}

/** One of `allowed`, or a `UsageError` naming the option (with the closest allowed value). */
export function choiceOption<T extends string>(command: string, flag: string, v: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(v)) return v as T;
  const guess = suggest(v, allowed);
  throw new UsageError(`${command}: ${flag} must be one of ${allowed.join('|')}, got ${JSON.stringify(v)}${guess ? ` (did you mean ${guess}?)` : ''}`);
}

/** Errors a user fixes by changing what they typed or configured: shown as their message alone. */
function isUserError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return e instanceof UsageError || code === 'ERR_INVALID_ARG' || code === 'ERR_CONFIG' || e instanceof RangeError;
}

/**
 * How a command reports an error that ends it: one line, `<name>: <message>`, without the stack trace; with
 * `SHOAL_DEBUG=1` in `env`, the stack (and causes) as well. Errors that are not the user's (a bug, an I/O
 * failure) add a hint that SHOAL_DEBUG=1 shows where they came from.
 */
export function formatCommandError(name: string, e: unknown, env: Record<string, string | undefined> = process.env): string {
  if (env.SHOAL_DEBUG === '1' && e instanceof Error) {
    let out = `${name}: ${e.stack ?? e.message}\n`;
    for (let c = e.cause; c instanceof Error; c = c.cause) out += `caused by: ${c.stack ?? c.message}\n`;
    return out;
  }
  const msg = e instanceof Error ? e.message : String(e);
  // Messages already prefixed by this command or one of its subcommands (`shoal run: ...`) keep their prefix.
  const line = msg.startsWith(`${name}:`) || msg.startsWith(`${name} `) ? msg : `${name}: ${msg}`;
  return isUserError(e) ? `${line}\n` : `${line} (SHOAL_DEBUG=1 shows the stack trace)\n`;
}

/** Exit code for an error that ends a command: 2 for usage mistakes, 1 otherwise. */
export function exitCodeOf(e: unknown): number {
  return e instanceof UsageError ? 2 : 1;
}

/**
 * Run a command's `main` and exit with its code; an error it throws is printed by `formatCommandError` (one line
 * unless SHOAL_DEBUG=1) and exits with `exitCodeOf`.
 */
export function runCommand(name: string, main: () => Promise<number | void>): void {
  main().then(
    (code) => process.exit(code ?? 0),
    (e: unknown) => {
      process.stderr.write(formatCommandError(name, e));
      process.exit(exitCodeOf(e));
    },
  );
}
