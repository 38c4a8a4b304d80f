import { gradientSyncCompliance } from '../compliance.js';
import { memoryGroups } from './memory-groups.js';
import { RingSync } from './ring-sync.js';

gradientSyncCompliance('ring over memory', async (n) => (await memoryGroups(n, { timeoutMs: 5000 })).map((g) => new RingSync(g))).run();
gradientSyncCompliance('ring over memory, 256-byte fusion buffer, fp16 off', async (n) =>
  (await memoryGroups(n, { timeoutMs: 5000 })).map((g) => new RingSync(g, { fusionThresholdBytes: 256, segmentBytes: 64 })),
  { sizes: [3] },
).run();
