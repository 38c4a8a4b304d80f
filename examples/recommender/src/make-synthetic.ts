/**
 * Writes the second, synthetic data set and its config into a folder (default examples/recommender/fixtures):
 *   node examples/recommender/dist/make-synthetic.js [dir]
 * then: npm run demo -- --config examples/recommender/fixtures/synthetic-grocery.json
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { SYNTHETIC_CONFIG, SYNTHETIC_DEFAULTS, synthesizeLog } from './synthetic.js';

const dir = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures'));
mkdirSync(dir, { recursive: true });
writeFileSync(join(dir, SYNTHETIC_CONFIG.file), gzipSync(synthesizeLog(SYNTHETIC_DEFAULTS), { level: 9 }));
writeFileSync(join(dir, 'synthetic-grocery.json'), JSON.stringify(SYNTHETIC_CONFIG, null, 2) + '\n');
console.log(`wrote ${join(dir, SYNTHETIC_CONFIG.file)} and synthetic-grocery.json`);
