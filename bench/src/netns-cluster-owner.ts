/**
 * Test helper for netns-cluster.test.ts: starts a 2-host cluster with a process held on host 1, prints
 * {"namespaces": [...]} and waits to be stopped by a signal.
 */
import { fileURLToPath } from 'node:url';
import { NetnsCluster } from './netns-cluster.js';
import { jsonLines } from './json-lines.js';

const c = await NetnsCluster.start({ hosts: 2 });
const held = jsonLines(c.spawn(1, process.execPath, [fileURLToPath(new URL('./cluster-probe.js', import.meta.url)), 'hold'], { stdio: ['ignore', 'pipe', 'pipe'] }));
await held.wait((o) => o.ready === true, 15_000, 'held process');
process.stdout.write(`${JSON.stringify({ namespaces: [...c.namespaces] })}\n`);
setInterval(() => {}, 1 << 30);
