/**
 * Writes the synthetic grocery log (fixtures/synthetic-grocery.csv.gz) and its config (configs/synthetic-grocery.json):
 *   node examples/recommender/dist/make-synthetic.js
 * then: npm run demo -- --config examples/recommender/configs/synthetic-grocery.json
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { SYNTHETIC_CONFIG, SYNTHETIC_DEFAULTS, synthesizeLog } from './synthetic.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
mkdirSync(join(root, 'configs'), { recursive: true });
const data = resolve(root, 'configs', SYNTHETIC_CONFIG.interactions.file);
writeFileSync(data, gzipSync(synthesizeLog(SYNTHETIC_DEFAULTS), { level: 9 }));
writeFileSync(join(root, 'configs', 'synthetic-grocery.json'), JSON.stringify(SYNTHETIC_CONFIG, null, 2) + '\n');
console.log(`wrote ${data} and configs/synthetic-grocery.json`);
