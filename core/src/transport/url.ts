import { Errors } from '../errors.js';

/**
 * Transport URLs, parsed in one place: `tcp://host:port` and `ipc:///path` (net, nng, the rendezvous store),
 * `shm://<name>` (shm). Each parser throws ERR_INVALID_ARG naming the URL and what is wrong with it.
 */

/** Parsed `tcp://host:port` or `ipc:///path`. */
export type NetAddress = { scheme: 'tcp'; host: string; port: number } | { scheme: 'ipc'; path: string };

/** Parse a `tcp://host:port` (IPv6 hosts in brackets) or `ipc:///path` URL. */
export function parseNetUrl(url: string): NetAddress {
  if (typeof url !== 'string') throw Errors.invalidArg('url', `must be a string, got ${typeof url}`);
  if (url.startsWith('ipc://')) {
    const path = url.slice('ipc://'.length);
    if (!path) throw Errors.invalidArg('url', `must name a socket path, got ${JSON.stringify(url)}`);
    return { scheme: 'ipc', path };
  }
  if (!url.startsWith('tcp://')) throw Errors.invalidArg('url', `must be tcp://host:port or ipc:///path, got ${JSON.stringify(url)}`);
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)\/?$/.exec(url);
  if (!m) throw Errors.invalidArg('url', `must be tcp://host:port, got ${JSON.stringify(url)}`);
  const port = Number(m[2]);
  if (port > 65535) throw Errors.invalidArg('url', `port must be 0..65535, got ${port} in ${url}`);
  return { scheme: 'tcp', host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** `tcp://host:port`, bracketing IPv6 hosts. */
export function formatTcpUrl(host: string, port: number): string {
  return `tcp://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** The name of a `shm://<name>` URL: '' or 'auto' ask for a fresh name. */
export function parseShmUrl(url: string): string {
  const m = /^shm:\/\/(.*)$/.exec(url);
  if (!m) throw Errors.invalidArg('url', `must be shm://<name>, got ${url}`);
  const name = m[1] ?? '';
  if (name !== '' && name !== 'auto' && !/^[A-Za-z0-9_.-]+$/.test(name)) {
    throw Errors.invalidArg('url', `shm name must match [A-Za-z0-9_.-]+, got ${name}`);
  }
  return name;
}
