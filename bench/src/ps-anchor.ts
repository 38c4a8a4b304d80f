// The ps bench's anchor: Ray's parameter-server pattern (bench/anchors/ray_ps.py: sharded ParameterServer actors,
// DataWorker actors returning gradient shards) on the same sizes, rounds, worker and server counts.
import { root, runChild, SMALL_WARMUP } from './ps-job.js';
import type { PsRow } from './ps-rows.js';

export interface RayAnchorOptions {
  sizes: number[];
  rounds: number[];
  numWorkers: number;
  numServers: number;
  warmup: number;
  quick: boolean;
  oversubscribed: boolean;
}

/** Run the Ray anchor once (`SHOAL_RAY_PYTHON` names its Python, default python3); its rows, or the error thrown. */
export async function runRayAnchor(o: RayAnchorOptions): Promise<PsRow[]> {
  const { sizes, rounds, numWorkers, numServers, warmup, quick, oversubscribed } = o;
  const py = process.env.SHOAL_RAY_PYTHON ?? 'python3';
  const out = await runChild(
    py,
    [`${root}bench/anchors/ray_ps.py`, '--sizes', sizes.join(','), '--rounds', rounds.join(','), '--workers', String(numWorkers), '--servers', String(numServers), '--warmup', String(warmup), '--small-iters', quick ? '100' : '300', '--small-warmup', String(SMALL_WARMUP)],
    {},
    900_000,
  );
  return out.map((r) => ({ ...(r as unknown as PsRow), transport: 'ray-object-store', oversubscribed }));
}
