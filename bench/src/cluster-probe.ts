/**
 * Small probes run inside a namespace-cluster host (netns-cluster.test.ts, cluster.ts), one JSON line on stdout:
 *
 *   node cluster-probe.js hostid                         {"hostId", "hostname"}
 *   node cluster-probe.js sink <address> <bytes>         listens on <address>:0, prints {"port"}, then reads
 *                                                        <bytes> from one connection: {"bytes", "seconds", "mbit"}
 *   node cluster-probe.js source <address> <port> <bytes> sends <bytes> and exits
 *   node cluster-probe.js hold                           prints {"ready":true} and waits to be killed
 */
import { createConnection, createServer } from 'node:net';
import { hostname } from 'node:os';
import { localHostId } from '@shoal/core';

const say = (o: object) => process.stdout.write(`${JSON.stringify(o)}\n`);
const [mode, ...rest] = process.argv.slice(2);

if (mode === 'hostid') {
  say({ hostId: localHostId(), hostname: hostname() });
} else if (mode === 'sink') {
  const [address, bytesS] = rest;
  const want = Number(bytesS);
  const server = createServer((sock) => {
    let got = 0;
    let t0 = 0;
    sock.on('data', (d: Buffer) => {
      if (got === 0) t0 = performance.now();
      got += d.length;
      if (got >= want) {
        const seconds = (performance.now() - t0) / 1000;
        say({ bytes: got, seconds, mbit: (got * 8) / seconds / 1e6 });
        sock.destroy();
        server.close();
      }
    });
  });
  server.listen(0, address, () => say({ port: (server.address() as { port: number }).port }));
} else if (mode === 'source') {
  const [address, portS, bytesS] = rest;
  let left = Number(bytesS);
  const chunk = Buffer.alloc(1 << 20, 7);
  const sock = createConnection({ host: address!, port: Number(portS) }, () => {
    const pump = (): void => {
      while (left > 0) {
        const n = Math.min(left, chunk.length);
        left -= n;
        if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) {
          sock.once('drain', pump);
          return;
        }
      }
      sock.end();
    };
    pump();
  });
  sock.on('error', (e) => {
    if (left > 0) {
      say({ error: e.message });
      process.exit(1);
    }
  });
} else if (mode === 'hold') {
  say({ ready: true });
  setInterval(() => {}, 1 << 30);
} else {
  say({ error: `unknown probe mode ${String(mode)}` });
  process.exit(2);
}
