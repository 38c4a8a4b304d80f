import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { Errors } from '@shoal/core';
import { formatCommandError, helpText, parseCommand, suggest, UsageError, type CommandSpec } from './command.js';
import { MAX_WORKERS, parseRunArgs, parseRunCommand, RUN_COMMAND } from '../launcher/run-args.js';

const usage = (fn: () => unknown): string => {
  try {
    fn();
  } catch (e) {
    assert.instance(e, UsageError);
    return (e as Error).message;
  }
  throw new Error('expected a UsageError');
};

test('suggest: close typos get the closest option, unrelated words nothing', () => {
  const names = ['backend', 'servers', 'threads', 'transport', 'timeout-ms'];
  assert.is(suggest('bakend', names), 'backend');
  assert.is(suggest('server', names), 'servers');
  assert.is(suggest('transprot', names), 'transport');
  assert.is(suggest('timeout', names), 'timeout-ms');
  assert.is(suggest('frobnicate', names), undefined);
  assert.is(suggest('x', names), undefined);
});

test('shoal run: an unknown option names itself and the closest known one; nothing else is parsed', () => {
  assert.match(usage(() => parseRunArgs(['-n', '2', '--bakend', 'ps', 'x.js'])), /^shoal run: unknown option --bakend \(did you mean --backend\?\)/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--frobnicate', 'x.js'])), /unknown option --frobnicate; see shoal run --help$/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--backend', 'rign', 'x.js'])), /--backend must be one of ring\|ps\|hybrid, got "rign" \(did you mean ring\?\)/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--backend'])), /--backend needs a value/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--threads=yes', 'x.js'])), /--threads/);
});

test('shoal run: a flag after the script goes to the script, unless it is one of shoal run\'s own (then an error); `--` hands everything after it to the script', () => {
  const o = parseRunArgs(['-n', '2', '--backend', 'ps', 'train.js', '--epochs', '3', '-x']);
  assert.equal([o.script, o.args, o.backend], ['train.js', ['--epochs', '3', '-x'], 'ps']);
  const m = usage(() => parseRunArgs(['-n', '2', 'train.js', '--backend', 'ps']));
  assert.match(m, /--backend comes after the script train\.js, so it would go to the script/);
  assert.match(m, /-- train\.js --backend/);
  assert.match(usage(() => parseRunArgs(['-n', '2', 'train.js', '--servers=2'])), /--servers=2 comes after the script/);
  assert.match(usage(() => parseRunArgs(['-n', '2', 'train.js', '-n', '4'])), /-n comes after the script/);
  const t = parseRunArgs(['-n', '2', '--', 'train.js', '--backend', 'custom', '-n', '4']);
  assert.equal([t.script, t.args, t.backend], ['train.js', ['--backend', 'custom', '-n', '4'], undefined]);
  // After a `--` of the script's own, its arguments are not checked either.
  assert.equal(parseRunArgs(['-n', '2', 'train.js', '--', '--backend', 'x']).args, ['--', '--backend', 'x']);
  // -np, horovodrun's spelling, is -n.
  assert.is(parseRunArgs(['-np', '3', 'train.js']).numWorkers, 3);
});

test('shoal run -n: bounded by cores (4 per core) unless --oversubscribe, never above the hard limit; warns above the core count', () => {
  assert.is(parseRunCommand(['-n', '2', 'a.js'], { cores: 2 }).warnings.length, 0);
  const w = parseRunCommand(['-n', '3', 'a.js'], { cores: 2 });
  assert.equal(w.warnings, ['shoal run: warning: 3 workers on 2 core(s): they share the cores, and every step waits for the slowest']);
  assert.is(parseRunCommand(['-n', '8', 'a.js'], { cores: 2 }).options.numWorkers, 8);
  assert.match(usage(() => parseRunCommand(['-n', '9', 'a.js'], { cores: 2 })), /-n 9 is more than 4 workers per core on this host's 2 core\(s\); pass --oversubscribe/);
  assert.is(parseRunCommand(['-n', '9', '--oversubscribe', 'a.js'], { cores: 2 }).options.numWorkers, 9);
  assert.match(usage(() => parseRunCommand(['-n', '1e9', '--oversubscribe', 'a.js'], { cores: 2 })), new RegExp(`-n must be an integer in 1\\.\\.${MAX_WORKERS}, got "1e9"`));
  assert.match(usage(() => parseRunCommand(['-n', '0', 'a.js'])), /-n must be an integer in 1\.\./);
  assert.match(usage(() => parseRunCommand(['-n', 'two', 'a.js'])), /-n must be an integer in 1\.\..*got "two"/);
  assert.match(usage(() => parseRunCommand(['a.js'])), /-n N is required/);
  assert.match(usage(() => parseRunCommand(['-n', '2'])), /no script given/);
});

test('shoal run --ps-mode async --staleness S: parsed for the ps backend, named when misused', () => {
  const o = parseRunArgs(['-n', '2', '--backend', 'ps', '--ps-mode', 'async', '--staleness', '2', 'a.js']);
  assert.equal([o.psMode, o.staleness], ['async', 2]);
  assert.is(parseRunArgs(['-n', '2', '--backend', 'ps', '--ps-mode', 'async', 'a.js']).staleness, undefined);
  assert.is(parseRunArgs(['-n', '2', '--backend', 'ps', '--ps-mode', 'sync', 'a.js']).psMode, 'sync');
  assert.match(usage(() => parseRunArgs(['-n', '2', '--ps-mode', 'async', 'a.js'])), /--ps-mode async needs --backend ps/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--backend', 'hybrid', '--ps-mode', 'async', 'a.js'])), /--ps-mode async needs --backend ps/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--backend', 'ps', '--staleness', '1', 'a.js'])), /--staleness needs --ps-mode async/);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--backend', 'ps', '--ps-mode', 'async', '--staleness=-1', 'a.js'])), /--staleness must be an integer in 0\.\./);
  assert.match(usage(() => parseRunArgs(['-n', '2', '--backend', 'ps', '--ps-mode', 'asink', 'a.js'])), /--ps-mode must be one of sync\|async, got "asink"/);
});

test('shoal run --help lists every option from the one table, with the after-the-script rule', () => {
  assert.is(parseRunCommand(['--help']).help, true);
  assert.is(parseRunCommand(['-n', '2', '-h']).help, true);
  const h = helpText(RUN_COMMAND);
  assert.match(h, /^usage: shoal run -n N \[options\] script\.js \[script args\.\.\.\]/);
  for (const name of Object.keys(RUN_COMMAND.options)) assert.ok(h.includes(`--${name}`), name);
  assert.match(h, /-h, --help/);
  assert.match(h, /shoal run -n 2 -- train\.js --backend custom/);
});

test('list and none modes: positionals allowed or named as stray', () => {
  const spec = { name: 'x', synopsis: '', options: { k: { type: 'string', help: 'k' } } } as const satisfies CommandSpec;
  assert.equal(parseCommand({ ...spec, positionals: 'list' }, ['a', '--k', '1', 'b']).positionals, ['a', 'b']);
  assert.match(usage(() => parseCommand(spec, ['--k', '1', 'stray'])), /^x: Unexpected argument 'stray'/);
  assert.equal(parseCommand(spec, ['--k=2']).values, { k: '2' });
});

test('errors that end a command: one line without a stack; SHOAL_DEBUG=1 adds it', () => {
  const u = formatCommandError('shoal run', new UsageError('shoal run: -n N is required'), {});
  assert.is(u, 'shoal run: -n N is required\n');
  const a = formatCommandError('shoal', Errors.invalidArg('script', 'x.js does not exist'), {});
  assert.is(a, 'shoal: script x.js does not exist\n');
  const b = formatCommandError('shoal', new Error('EIO: boom'), {});
  assert.is(b, 'shoal: EIO: boom (SHOAL_DEBUG=1 shows the stack trace)\n');
  assert.is(b.split('\n').length, 2);
  const d = formatCommandError('shoal', new Error('EIO: boom', { cause: new Error('inner') }), { SHOAL_DEBUG: '1' });
  assert.match(d, /^shoal: Error: EIO: boom\n\s+at /);
  assert.match(d, /caused by: Error: inner/);
});

test.run();
