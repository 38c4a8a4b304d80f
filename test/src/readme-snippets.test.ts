/**
 * Every code block in the repository's READMEs is checked, so a snippet cannot name a function that does not exist:
 *
 * - ```ts: type-checked together against the built packages (strict, as the packages themselves are). A snippet
 *   may use names it does not define (`x`, `buildModel`): declare them in an HTML comment right above the block,
 *   invisible on the rendered page:  <!-- snippet-context: declare const x: Float32Array; -->
 * - ```sh / ```bash: `bash -n`; every `npm run <script>` names a script of the root package.json.
 * - ```python: compiled; every `shoal_spark.<name>` it uses exists in the package, and each call's arguments
 *   bind to that function's signature.
 * - ```json: parsed.
 * Blocks without a language (or ```text) are prose such as file-format sketches, not code.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import ts from 'typescript';

const root = new URL('../..', import.meta.url).pathname;

interface Block {
  file: string;
  line: number;
  lang: string;
  code: string;
  context: string;
}

function readmes(dir: string, out: string[] = []): string[] {
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.name.startsWith('.') || ['node_modules', 'dist', 'build', 'tmp', 'data'].includes(e.name)) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) readmes(p, out);
    else if (e.name === 'README.md') out.push(p);
  }
  return out;
}

function blocks(file: string): Block[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(\w*)\s*$/.exec(lines[i]!);
    if (!open) continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && !/^\s*```\s*$/.test(lines[i]!); i++) body.push(lines[i]!);
    // The context comment: the nearest non-blank line above the fence, possibly spanning several lines.
    let context = '';
    let j = start - 1;
    while (j >= 0 && lines[j]!.trim() === '') j--;
    if (j >= 0 && lines[j]!.trim().endsWith('-->')) {
      let k = j;
      while (k >= 0 && !lines[k]!.includes('<!--')) k--;
      const text = lines.slice(k, j + 1).join('\n');
      const m = /<!--\s*snippet-context:([\s\S]*?)-->/.exec(text);
      if (m) context = m[1]!;
    }
    out.push({ file: relative(root, file), line: start + 1, lang: open[2]!.toLowerCase(), code: body.join('\n'), context });
  }
  return out;
}

const all = readmes(root).flatMap(blocks);
const where = (b: Block) => `${b.file}:${b.line}`;

test('the READMEs have code blocks to check', () => {
  assert.ok(all.filter((b) => b.lang === 'ts').length >= 4, 'TypeScript snippets found');
  const unknown = all.filter((b) => !['', 'text', 'ts', 'typescript', 'sh', 'bash', 'python', 'py', 'json'].includes(b.lang));
  assert.equal(unknown.map((b) => `${where(b)} ${b.lang}`), [], 'every block has a language this test checks');
});

test('TypeScript snippets type-check against the built packages', () => {
  const dir = join(root, 'tmp', 'readme-snippets');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const files = new Map<string, Block>();
  all.filter((b) => b.lang === 'ts' || b.lang === 'typescript').forEach((b, i) => {
    const name = join(dir, `snippet-${i}.ts`);
    // The context goes first, the snippet's own lines keep their numbers relative to a marker line.
    writeFileSync(name, `${b.context}\n// ---- ${where(b)}\n${b.code}\nexport {};\n`);
    files.set(name, b);
  });
  writeFileSync(join(dir, 'package.json'), '{ "type": "module" }\n');
  const program = ts.createProgram([...files.keys()], {
    target: ts.ScriptTarget.ES2022, lib: ['lib.es2023.d.ts'], module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext, strict: true, noEmit: true, skipLibCheck: true,
    esModuleInterop: true, types: ['node'], typeRoots: [join(root, 'node_modules/@types')],
  });
  const problems = ts.getPreEmitDiagnostics(program).map((d) => {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (!d.file) return msg;
    const b = files.get(d.file.fileName);
    const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0);
    if (!b) return `${relative(root, d.file.fileName)}:${line + 1}: ${msg}`;
    const marker = d.file.text.split('\n').findIndex((l) => l.startsWith('// ---- '));
    return line > marker ? `${b.file}:${b.line + line - marker}: ${msg}` : `${where(b)} (snippet-context): ${msg}`;
  });
  assert.equal(problems, []);
  rmSync(dir, { recursive: true, force: true });
});

test('shell snippets parse and name npm scripts that exist', () => {
  const scripts = Object.keys((JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { scripts: Record<string, string> }).scripts);
  const problems: string[] = [];
  for (const b of all.filter((x) => x.lang === 'sh' || x.lang === 'bash')) {
    const r = spawnSync('bash', ['-n'], { input: b.code, encoding: 'utf8' });
    if (r.status !== 0) problems.push(`${where(b)}: ${r.stderr.trim()}`);
    for (const m of b.code.matchAll(/npm run ([\w:.-]+)/g)) {
      if (!scripts.includes(m[1]!)) problems.push(`${where(b)}: npm run ${m[1]}: no such script in package.json`);
    }
  }
  assert.equal(problems, []);
});

test('Python snippets compile and call shoal_spark with arguments its functions take', () => {
  const py = all.filter((b) => b.lang === 'python' || b.lang === 'py');
  const script = [
    'import ast, inspect, json, sys',
    'import shoal_spark',
    'out = []',
    'for b in json.load(sys.stdin):',
    '    try:',
    '        tree = ast.parse(b["code"])',
    '    except SyntaxError as e:',
    '        out.append(f"{b[\'where\']}: {e}"); continue',
    '    for n in ast.walk(tree):',
    '        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "shoal_spark" and not hasattr(shoal_spark, n.attr):',
    '            out.append(f"{b[\'where\']}: shoal_spark has no {n.attr}")',
    // a call's arguments bind to the function's signature (a misspelt or removed keyword fails here)
    '        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name) and n.func.value.id == "shoal_spark" and callable(getattr(shoal_spark, n.func.attr, None)):',
    '            try:',
    '                inspect.signature(getattr(shoal_spark, n.func.attr)).bind(*[None for _ in n.args], **{k.arg: None for k in n.keywords if k.arg})',
    '            except TypeError as e:',
    '                out.append(f"{b[\'where\']}: shoal_spark.{n.func.attr}(...): {e}")',
    'print(json.dumps(out))',
  ].join('\n');
  const r = spawnSync('python3', ['-c', script], {
    input: JSON.stringify(py.map((b) => ({ where: where(b), code: b.code }))), encoding: 'utf8',
    env: { ...process.env, PYTHONPATH: join(root, 'python') }, timeout: 60_000,
  });
  assert.is(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout) as string[], []);
});

test('JSON snippets parse', () => {
  const problems: string[] = [];
  for (const b of all.filter((x) => x.lang === 'json')) {
    try {
      JSON.parse(b.code);
    } catch (e) {
      problems.push(`${where(b)}: ${(e as Error).message}`);
    }
  }
  assert.equal(problems, []);
});

test.run();
