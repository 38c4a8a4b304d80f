import { MemoryNetwork } from './memory.js';
import { transportConformance } from './conformance.js';

transportConformance('memory', async () => {
  const net = new MemoryNetwork();
  return { transport: net.transport(), listenUrl: () => 'mem://' };
}).run();
