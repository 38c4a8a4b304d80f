#!/usr/bin/env node
// Runs every compiled uvu test file in its own Node process (a hang or crash in one file cannot take the
// others down), with a per-file time limit, then prints one closing line `N passed, N failed` for CI.
//
//   node scripts/run-tests.mjs [substring ...]      only files whose path contains one of the substrings
//   SHOAL_TEST_TIMEOUT_S=600                         per-file limit (default 600 s)
import { spawn } from 'node:child_process';
import { readdirSync, statSync, existsSync } from 'node:fs';
import { join, relative } from 'node:path';

const root = new URL('..', import.meta.url).pathname;
const roots = ['core/dist', 'datasets/dist', 'backends/dist', 'wrappers/dist', 'run/dist', 'bench/dist', 'test/dist', 'examples/recommender/dist'];
const filters = process.argv.slice(2);
const limitS = Number(process.env.SHOAL_TEST_TIMEOUT_S ?? 600);

function walk(dir, out) {
  if (!existsSync(dir)) return out;
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) walk(p, out);
    else if (name.endsWith('.test.js')) out.push(p);
  }
  return out;
}
const files = roots.flatMap((r) => walk(join(root, r), [])).sort()
  .filter((f) => filters.length === 0 || filters.some((s) => f.includes(s)));

const strip = (s) => s.replace(/\x1b\[[0-9;]*m/g, '');
let passed = 0, failed = 0, skipped = 0;
const failures = [];

function runFile(file) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(process.execPath, ['--enable-source-maps', file], {
      cwd: root,
      env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; process.stdout.write(d); });
    child.stderr.on('data', (d) => { out += d; process.stderr.write(d); });
    const timer = setTimeout(() => { out += `\n[run-tests] killed after ${limitS}s\n`; child.kill('SIGKILL'); }, limitS * 1000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const text = strip(out);
      const num = (label) => { const m = text.match(new RegExp(`${label}:\\s+(\\d+)`, 'g')); return m ? m.map((x) => Number(x.split(/:\s+/)[1])).reduce((a, b) => a + b, 0) : null; };
      const total = num('Total'), pass = num('Passed'), skip = num('Skipped') ?? 0;
      resolve({ code, signal, total, pass, skip, ms: Date.now() - t0 });
    });
  });
}

for (const f of files) {
  const rel = relative(root, f);
  console.log(`\n=== ${rel}`);
  const r = await runFile(f);
  if (r.total === null || r.pass === null) {
    failed += 1; failures.push(`${rel}: exited ${r.code ?? r.signal} without a uvu summary`);
    continue;
  }
  const fail = r.total - r.pass - r.skip;
  passed += r.pass; skipped += r.skip; failed += fail;
  if (fail > 0 || r.code !== 0) {
    if (fail === 0) { failed += 1; failures.push(`${rel}: exit code ${r.code ?? r.signal}`); }
    else failures.push(`${rel}: ${fail} failed`);
  }
  console.log(`=== ${rel}: ${r.pass}/${r.total} passed in ${(r.ms / 1000).toFixed(1)} s`);
}
if (files.length === 0) { console.error('[run-tests] no test files found; did the build run?'); failed += 1; }
if (failures.length) console.log('\nFailures:\n  ' + failures.join('\n  '));
console.log(`\n${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
process.exit(failed > 0 ? 1 : 0);
