/**
 * `npm run bench -- report [--results DIR] [--out FILE]`: one page from the suites' result files
 * (bench/results/<suite>.json by default): machine facts, a table per suite with shoal beside its anchor and
 * the ratios, and PNG charts (Vega-Lite specs compiled to Vega, rendered to SVG by vega's headless view and to
 * PNG by resvg) next to the page in `<out dir>/report/`. A suite whose file is missing is listed as missing.
 * Format and the charts: bench/README.md ("report").
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { basename, dirname, join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseCommand, type CommandSpec } from '@shoal/run/cli';
import { barChart, lineChart, renderPng, type TopLevelSpec } from '@shoal/run/charts';

type Row = Record<string, unknown>;
type Result = { suite: string; started?: string; host?: Record<string, unknown>; rows?: Row[]; [k: string]: unknown };

const root = fileURLToPath(new URL('../../', import.meta.url));
export const SUITES = ['micro', 'transport', 'allreduce', 'ps', 'datasets', 'train', 'spark', 'cluster'] as const;

const num = (x: unknown, digits = 3): string => (typeof x === 'number' && Number.isFinite(x) ? String(+x.toPrecision(digits)) : x === undefined || x === null ? '' : String(x));
const size = (b: unknown): string => {
  const n = Number(b);
  if (!Number.isFinite(n)) return '';
  if (n >= 1 << 20 && n % (1 << 20) === 0) return `${n / (1 << 20)} MiB`;
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`;
  return `${n} B`;
};

/** A markdown table; `cols` maps a header to how a row shows in it. */
function table(rows: readonly Row[], cols: Record<string, (r: Row) => string>): string {
  const heads = Object.keys(cols);
  const lines = [`| ${heads.join(' | ')} |`, `|${heads.map(() => '---').join('|')}|`];
  for (const r of rows) lines.push(`| ${heads.map((h) => cols[h]!(r).replace(/\|/g, '/')).join(' | ')} |`);
  return lines.join('\n');
}

interface Section {
  text: string;
  charts: { name: string; spec: TopLevelSpec }[];
}

/** Per suite: the table and the charts. Unknown fields are left out, never invented. */
const sections: Record<(typeof SUITES)[number], (r: Result) => Section> = {
  micro: (r) => ({
    text: table(r.rows ?? [], { name: (x) => String(x.name), impl: (x) => String(x.impl), bytes: (x) => size(x.bytes), 'p50 us': (x) => num(x.p50_us), 'GB/s': (x) => num(x.gbps) }),
    charts: [],
  }),
  transport: (r) => ({
    text: table(r.rows ?? [], {
      transport: (x) => String(x.transport),
      scheme: (x) => String(x.url_scheme),
      bytes: (x) => size(x.bytes),
      'one-way MB/s': (x) => num(x.oneway_mbps),
      'x anchor': (x) => num(x.oneway_vs_anchor),
      'rtt p50 us': (x) => num(x.rtt_p50_us),
      'rtt x anchor': (x) => num(x.rtt_p50_vs_anchor),
    }),
    charts: [
      {
        name: 'transport-oneway',
        spec: lineChart('one-way throughput vs message size', (r.rows ?? []).map((x) => ({ ...x, impl: `${String(x.transport)} ${String(x.url_scheme)}` })), 'bytes', 'oneway_mbps', 'impl', 'message bytes', 'MB/s'),
      },
    ],
  }),
  allreduce: (r) => ({
    text: table(r.rows ?? [], {
      impl: (x) => String(x.impl),
      transport: (x) => String(x.transport),
      n: (x) => num(x.n),
      bytes: (x) => size(x.bytes),
      'p50 us': (x) => num(x.p50_us),
      'busbw GB/s': (x) => num(x.busbw_gbps),
      'busbw x gloo': (x) => num(x.busbw_vs_gloo),
      'p50 x gloo': (x) => num(x.p50_vs_gloo),
    }),
    charts: [
      {
        name: 'allreduce-busbw',
        spec: lineChart('allreduce busbw vs size, one host', (r.rows ?? []).filter((x) => Number(x.bytes) >= 1024).map((x) => ({ ...x, impl: `${String(x.impl)} ${String(x.transport)}`, ranks: `n=${String(x.n)}` })), 'bytes', 'busbw_gbps', 'impl', 'bytes', 'busbw GB/s', true, 'ranks'),
      },
    ],
  }),
  ps: (r) => ({
    text: table(r.rows ?? [], {
      impl: (x) => String(x.impl),
      transport: (x) => String(x.transport ?? ''),
      plane: (x) => String(x.plane ?? ''),
      kind: (x) => String(x.kind),
      bytes: (x) => size(x.bytes),
      'rounds/s': (x) => num(x.rounds_per_s),
      'p50 us': (x) => num(x.p50_us),
      'x Ray': (x) => num(x.vs_ray),
    }),
    charts: [
      {
        name: 'ps-rounds',
        spec: barChart('ps rounds/s (dense keys) vs Ray', (r.rows ?? []).filter((x) => x.kind === 'dense').map((x) => ({ ...x, impl: x.impl === 'ray' ? 'ray' : `${String(x.plane)} ${String(x.transport)}`, size: size(x.bytes) })), 'size', 'rounds_per_s', 'impl', 'rounds/s'),
      },
    ],
  }),
  datasets: (r) => ({
    text: table([...(r.rows ?? []), ...(((r.anchor as { rows?: Row[] } | undefined)?.rows ?? []) as Row[])], {
      source: (x) => String(x.source),
      codec: (x) => String(x.codec),
      threads: (x) => num(x.threads),
      'MB/s': (x) => num(x.mb_per_s),
      'MB per CPU s': (x) => num(x.mb_per_cpu_s),
    }),
    charts: [],
  }),
  train: (r) => ({
    text:
      table(r.rows ?? [], {
        model: (x) => String(x.model),
        mode: (x) => String(x.mode),
        backend: (x) => String(x.backend ?? ''),
        workers: (x) => num(x.workers),
        'samples/s': (x) => num(x.samples_per_sec),
        'step ms': (x) => num(x.step_ms),
        oversubscribed: (x) => (x.oversubscribed ? 'yes' : ''),
      }) +
      '\n\nRatios: ' +
      Object.entries((r.ratios as Record<string, number> | undefined) ?? {})
        .map(([k, v]) => `${k} ${num(v)}`)
        .join('; '),
    charts: [
      {
        name: 'train-samples',
        spec: barChart('samples/s vs workers', (r.rows ?? []).filter((x) => typeof x.workers === 'number').map((x) => ({ ...x, what: `${String(x.mode)} ${String(x.backend ?? '')}`.trim(), workers: `${String(x.workers)} worker(s)` })), 'workers', 'samples_per_sec', 'what', 'samples/s', 'model'),
      },
    ],
  }),
  spark: (r) => ({
    text: table(r.rows ?? [], {
      workers: (x) => num(x.workers),
      path: (x) => String(x.path),
      'MB/s': (x) => num(x.mbps ?? (Array.isArray(x.mbps_per_task) ? (x.mbps_per_task as number[]).map((v) => num(v)).join(', ') : '')),
      'wall s': (x) => num(x.wall_s),
    }),
    charts: [],
  }),
  cluster: (r) => ({
    text:
      table(r.rows ?? [], {
        impl: (x) => String(x.impl),
        transport: (x) => String(x.transport),
        placement: (x) => String(x.placement),
        'Mbit/s': (x) => (x.rate_mbit === 0 ? 'unshaped' : num(x.rate_mbit)),
        bytes: (x) => size(x.bytes),
        'p50 us': (x) => num(x.p50_us),
        'busbw GB/s': (x) => num(x.busbw_gbps),
        'of link': (x) => (x.rate_mbit ? `${num((x.link_share as number) * 100)} %` : ''),
        'x gloo': (x) => num(x.busbw_vs_gloo),
        'p50 x gloo': (x) => num(x.p50_vs_gloo),
        'x flat ring': (x) => num(x.vs_flat_ring),
      }) +
      '\n\n' +
      table((r.ps as Row[] | undefined) ?? [], {
        impl: (x) => `${String(x.impl)}${typeof x.request_bytes === 'number' && x.request_bytes > 0 ? ` (requests of ${size(x.request_bytes)})` : ''}`,
        'Mbit/s': (x) => num(x.rate_mbit),
        bytes: (x) => size(x.bytes),
        'rounds/s': (x) => (typeof x.missing === 'string' ? `missing: ${x.missing.slice(0, 120)}` : num(x.rounds_per_s)),
        'x Ray': (x) => num(x.vs_ray),
        'x gloo avg': (x) => num(x.vs_anchor),
      }) +
      '\n\n' +
      table((r.link_bytes as Row[] | undefined) ?? [], { topology: (x) => String(x.topology), bytes: (x) => size(x.bytes), 'sent per host / bytes': (x) => ((x.tx_over_bytes as number[]) ?? []).map((v) => num(v, 4)).join(', ') }) +
      (r.ps_anchor_note ? `\n\nps anchor: ${String(r.ps_anchor_note)}` : ''),
    charts: [
      {
        name: 'cluster-busbw',
        spec: lineChart('allreduce busbw vs size across namespace hosts', (r.rows ?? []).filter((x) => Number(x.bytes) >= 1024).map((x) => ({ ...x, impl: `${String(x.impl)} ${String(x.transport)} ${String(x.placement)}`, link: x.rate_mbit === 0 ? 'unshaped' : `${String(x.rate_mbit)} Mbit/s` })), 'bytes', 'busbw_gbps', 'impl', 'bytes', 'busbw GB/s', true, 'link'),
      },
    ],
  }),
};

function machine(results: Result[]): string {
  const rows = results.map((r) => ({ suite: r.suite, started: r.started ?? '', ...(r.host ?? {}) }));
  const facts = table(rows, {
    suite: (x) => String(x.suite),
    started: (x) => String(x.started).slice(0, 16),
    cores: (x) => num(x.cpus),
    node: (x) => String(x.node ?? ''),
    load: (x) => num(x.loadavg1 ?? x.loadavg1_start),
    other: (x) => ['python', 'pyspark', 'torch', 'kernel'].filter((k) => x[k]).map((k) => `${k} ${String(x[k])}`).join(', '),
  });
  return `This machine now: ${cpus().length} cores, Linux ${release()}, load ${num(loadavg()[0])}. Every suite records the machine it ran on; rows that keep more processes busy than there are cores are flagged oversubscribed in the JSON.\n\n${facts}`;
}

/** `npm run bench -- report`: its options (one table for the parser and `--help`). */
export const command = {
  name: 'bench report',
  synopsis: '[options]',
  description: 'bench/report.md from the result files: machine facts, a table per suite, PNG charts',
  options: {
    results: { type: 'string', arg: 'DIR', help: 'where the <suite>.json files are (default bench/results)' },
    out: { type: 'string', arg: 'FILE', help: 'the page to write (default bench/report.md); charts go to report/ beside it' },
  },
} as const satisfies CommandSpec;

export async function run(argv: string[]): Promise<void> {
  const values = parseCommand(command, argv).values;
  const dir = values.results ?? join(root, 'bench/results');
  const out = values.out ?? join(root, 'bench/report.md');
  const chartDir = join(dirname(out), 'report');
  const found: Result[] = [];
  const missing: string[] = [];
  for (const s of SUITES) {
    const f = join(dir, `${s}.json`);
    if (existsSync(f)) found.push(JSON.parse(readFileSync(f, 'utf8')) as Result);
    else missing.push(s);
  }
  const parts = [`# shoal benchmark report\n\nFrom ${relative(root, dir) || dir}/<suite>.json (written by \`npm run bench -- <suite>\`; commands and formats in bench/README.md). Regenerate: \`npm run bench -- report\`.`];
  parts.push(`## Machine\n\n${machine(found)}`);
  if (missing.length) parts.push(`Missing suites (no result file): ${missing.join(', ')}.`);
  for (const r of found) {
    const name = r.suite as (typeof SUITES)[number];
    if (typeof r.skipped === 'string') {
      parts.push(`## ${name}\n\nSkipped: ${String(r.skipped)}`);
      continue;
    }
    const sec = sections[name](r);
    const charts: string[] = [];
    for (const c of sec.charts) {
      const file = join(chartDir, `${c.name}.png`);
      try {
        await renderPng(c.spec, file);
        charts.push(`![${c.name}](${relative(dirname(out), file)})`);
      } catch (e) {
        charts.push(`(chart ${c.name} failed: ${(e as Error).message})`);
      }
    }
    const errors = (r.errors as unknown[] | undefined)?.length ? `\n\nErrors in this run: ${JSON.stringify(r.errors)}` : '';
    parts.push(`## ${name}\n\n${sec.text}${errors}${charts.length ? `\n\n${charts.join('\n\n')}` : ''}`);
  }
  mkdirSync(dirname(out), { recursive: true });
  writeFileSync(out, `${parts.join('\n\n')}\n`);
  console.log(`report: wrote ${out} (${found.length} suites${missing.length ? `, missing ${missing.join(', ')}` : ''}; charts in ${basename(chartDir)}/)`);
}
