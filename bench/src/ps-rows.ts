// The ps bench's result rows: their fields, the median over repeats, the ratios against Ray, the printed table.
import type { Plane } from './ps-job.js';

export interface PsRow {
  impl: 'shoal-ps' | 'ray';
  /** shoal: the transport between workers and servers; ray: its object store. */
  transport: string;
  /** shoal: how dense values travel (see `Plane`); small and rowsparse rows: the plane of the run they came from. */
  plane?: Plane;
  kind: 'dense' | 'small' | 'rowsparse';
  bytes: number;
  rounds: number;
  p50_us: number;
  p99_us?: number;
  avg_us: number;
  rounds_per_s: number;
  verified: boolean;
  oversubscribed: boolean;
  vs_ray?: number;
  /** Ray's p50 round time / shoal's (median-based: less sensitive to load spikes than the mean). */
  vs_ray_p50?: number;
  /** `net-tls` rows: rounds/s over those of the plain `net` row of the same plane, kind and size (`--tls`). */
  vs_plain?: number;
  /** `net-tls` rows: the plain `net` row's p50 round time / this row's (below 1: what TLS costs). */
  vs_plain_p50?: number;
  rows_per_s?: number;
  touched_rows?: number;
  row_bytes?: number;
  push_wire_bytes?: number;
  pull_wire_bytes?: number;
  push_wire_ratio?: number;
  pull_wire_ratio?: number;
  /** Mean CPU time of one worker per round, ms (Ray: its DataWorker actors). */
  worker_cpu_ms_per_round?: number;
  /** CPU time of all servers together per round, ms (Ray: its ParameterServer actors; the raylet is not counted). */
  server_cpu_ms_per_round?: number;
  /** Repeats this row is the median of (`--repeat`). */
  runs?: number;
}


/** The `p` quantile of an ascending array (nearest rank). */
export const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;

/** One row per (impl, transport, kind, bytes): the median of every numeric field over the repeats. */
export function medianRows(raw: PsRow[], repeat: number): PsRow[] {
  const groups = new Map<string, PsRow[]>();
  for (const r of raw) {
    const k = `${r.impl}|${r.transport}|${r.plane}|${r.kind}|${r.bytes}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  return [...groups.values()].map((g) => {
    const out: Record<string, unknown> = { ...g[0]!, runs: g.length, verified: g.every((r) => r.verified) };
    for (const [k, v] of Object.entries(g[0]!)) {
      if (typeof v !== 'number' || k === 'bytes' || k === 'rounds') continue;
      const xs = g.map((r) => (r as unknown as Record<string, number>)[k]!).sort((a, b) => a - b);
      out[k] = xs.length % 2 ? xs[(xs.length - 1) / 2] : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2;
    }
    if (g.length < repeat) out.partial = true;
    return out as unknown as PsRow;
  });
}

/** Set `vs_ray` and `vs_ray_p50` on every shoal row that has a Ray row of the same kind and size. */
export function compareWithRay(rows: PsRow[]): void {
  for (const ray of rows.filter((x) => x.impl === 'ray')) {
    for (const mine of rows.filter((x) => x.impl === 'shoal-ps' && x.kind === ray.kind && x.bytes === ray.bytes)) {
      mine.vs_ray = mine.rounds_per_s / ray.rounds_per_s;
      mine.vs_ray_p50 = ray.p50_us / mine.p50_us;
    }
  }
}

/** Set `vs_plain` and `vs_plain_p50` on every `net-tls` row that has a plain `net` row of the same plane, kind and size. */
export function compareWithPlain(rows: PsRow[]): void {
  for (const tls of rows.filter((x) => x.transport === 'net-tls')) {
    const plain = rows.find((x) => x.impl === tls.impl && x.transport === 'net' && x.plane === tls.plane && x.kind === tls.kind && x.bytes === tls.bytes);
    if (!plain) continue;
    tls.vs_plain = tls.rounds_per_s / plain.rounds_per_s;
    tls.vs_plain_p50 = plain.p50_us / tls.p50_us;
  }
}

/** The table `npm run bench -- ps` prints. */
export function printRows(rows: PsRow[]): void {
  for (const r of rows) {
    const extra =
      r.kind === 'rowsparse'
        ? ` rows/s ${r.rows_per_s!.toFixed(0)} push wire ${r.push_wire_ratio!.toFixed(3)}x pull wire ${r.pull_wire_ratio!.toFixed(3)}x`
        : r.vs_ray !== undefined
          ? ` vs ray ${r.vs_ray.toFixed(2)}x (p50 ${r.vs_ray_p50!.toFixed(2)}x)`
          : '';
    const tls = r.vs_plain !== undefined ? ` vs plain net ${r.vs_plain.toFixed(2)}x (p50 ${r.vs_plain_p50!.toFixed(2)}x)` : '';
    console.log(`${r.impl.padEnd(8)} ${r.transport.padEnd(16)} ${(r.plane ?? '').padEnd(8)} ${r.kind.padEnd(9)} ${String(r.bytes).padStart(9)} B  p50 ${(r.p50_us / 1000).toFixed(2)} ms  ${r.rounds_per_s.toFixed(1)} rounds/s${extra}${tls}${r.verified ? '' : ' UNVERIFIED'}`);
  }
}
