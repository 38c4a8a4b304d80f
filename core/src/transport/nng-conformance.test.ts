import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { transportConformance } from './conformance.js';
import { JobAuth } from '../security/job-auth.js';
import { createNngTransport } from './nng.js';

const auth = JobAuth.generate('nng-conformance');
const peer = { module: new URL('./nng.js', import.meta.url).href, factory: 'createNngTransport', auth };

transportConformance('nng tcp', async () => ({
  transport: createNngTransport({ auth }),
  listenUrl: () => 'tcp://127.0.0.1:0',
  peer,
})).run();

const dir = mkdtempSync(join(tmpdir(), 'shoal-nng-'));
let seq = 0;
transportConformance('nng ipc', async () => ({
  transport: createNngTransport({ auth }),
  listenUrl: () => `ipc://${dir}/p${++seq}.sock`,
  peer,
  async teardown() {
    rmSync(dir, { recursive: true, force: true });
  },
})).run();
