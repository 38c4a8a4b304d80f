/** The synthetic grocery log as a prepared task, for the recommender's training tests (written to a temp folder). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildTask, cleanRows, synthesizeLog, SYNTHETIC_CONFIG, SYNTHETIC_DEFAULTS, validateConfig, type Prepared } from '../../../examples/recommender/dist/index.js';

export async function syntheticTask(orders: number): Promise<Prepared> {
  const dir = mkdtempSync(join(tmpdir(), 'rec-synth-'));
  try {
    writeFileSync(join(dir, 'log.csv'), synthesizeLog({ ...SYNTHETIC_DEFAULTS, orders }));
    const cfg = validateConfig({ ...JSON.parse(JSON.stringify(SYNTHETIC_CONFIG)), interactions: { ...SYNTHETIC_CONFIG.interactions, file: 'log.csv' } });
    const { rows, stats } = await cleanRows(cfg, dir);
    return buildTask(rows, stats, cfg, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
