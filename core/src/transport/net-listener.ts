import { chmodSync } from 'node:fs';
import * as net from 'node:net';
import { Errors, ShoalError, isShoalError } from '../errors.js';
import type { JobAuth } from '../security/job-auth.js';
import { deferred, withDeadline, type Deferred } from '../util.js';
import { NetConnection, type NetConnectionSettings } from './net-connection.js';
import { adoptWithDirectInput, dataEvents, directEvents, DirectInput } from './net-direct-input.js';
import { listenerHandshake } from './net-handshake.js';
import type { Connection, IoOptions, Listener } from './transport.js';
import type { NetAddress } from './url.js';

/** What a listener needs from its transport. */
export interface NetListenerSettings extends NetConnectionSettings {
  auth: JobAuth;
  handshakeTimeoutMs: number;
  /** Connections in their handshake at once; more are closed on arrival (counted as rejected). */
  maxPendingConnections: number;
}

/**
 * The listening end of a net pair. Every connection runs the authenticated handshake (net-handshake.ts); the first
 * that passes becomes the pair's peer and the listener stops listening. A connection that fails (not a shoal
 * peer, not in the job, too slow, one too many) is closed at once, counted and logged by the job's `AuthLog`,
 * and never takes the listener's one slot.
 */
export class NetListener implements Listener {
  url = '';
  private readonly pending: Deferred<NetConnection> = deferred();
  private paired = false;
  private handedOut = false;
  private closedFlag = false;
  private conn: NetConnection | undefined;
  private rejectedHandshakes = 0;
  /** Sockets still in their handshake, destroyed if the listener closes first. */
  private readonly handshaking = new Set<net.Socket>();
  private lastRejection = '';

  constructor(
    private readonly server: net.Server,
    private readonly addr: NetAddress,
    private readonly opts: NetListenerSettings,
    /** `ListenOptions.incomingLimit`: the accepted connection's bound from its first byte. */
    private readonly incomingLimit?: { bytes: number; reason: string },
  ) {
    this.pending.promise.catch(() => {});
    server.on('connection', (sock) => this.onConnection(sock));
    // An accept error (EMFILE...) concerns one would-be peer; keep listening for the others.
    server.on('error', () => {});
  }

  /** Connections that failed their handshake on this listener. */
  get rejected(): number {
    return this.rejectedHandshakes;
  }

  private reject(where: string, why: string): void {
    this.rejectedHandshakes++;
    this.lastRejection = why;
    this.opts.auth.log.reject(where, why);
  }

  private onConnection(accepted: net.Socket): void {
    accepted.on('error', () => {}); // handshake errors are reported through the handshake
    if (this.paired || this.closedFlag) {
      accepted.destroy();
      return;
    }
    const remote = this.addr.scheme === 'tcp' ? `${accepted.remoteAddress}:${accepted.remotePort} (accepted on ${this.url})` : `peer on ${this.url}`;
    if (this.handshaking.size >= this.opts.maxPendingConnections) {
      accepted.destroy();
      this.reject(remote, `more than ${this.opts.maxPendingConnections} connections in their handshake at once`);
      return;
    }
    this.handshaking.add(accepted);
    this.secure(accepted, remote).then(
      ({ sock, input }) => {
        this.handshaking.delete(accepted);
        this.handshaking.add(sock);
        const hs = { auth: this.opts.auth, maxMessageBytes: this.opts.maxMessageBytes, where: remote, timeoutMs: this.opts.handshakeTimeoutMs };
        return listenerHandshake(sock, input ? directEvents(input) : dataEvents(sock), hs).then(
          (r) => {
            this.handshaking.delete(sock);
            if (this.paired || this.closedFlag) {
              sock.destroy();
              return;
            }
            this.paired = true;
            this.opts.auth.log.accepted++;
            this.server.close(); // pair semantics: one peer, stop listening (a unix socket's file goes with it)
            for (const other of this.handshaking) other.destroy();
            this.handshaking.clear();
            sock.setKeepAlive(true, 10_000);
            this.conn = new NetConnection(sock, remote, r.peerMaxMessageBytes, this.opts, r.leftover, input, this.incomingLimit);
            this.pending.resolve(this.conn);
          },
          (e: unknown) => {
            this.handshaking.delete(sock);
            sock.destroy();
            throw e;
          },
        );
      },
    ).catch((e: unknown) => {
      this.handshaking.delete(accepted);
      accepted.destroy();
      if (this.closedFlag || this.paired) return;
      this.reject(remote, e instanceof Error ? e.message : String(e));
    });
  }

  /**
   * The socket the handshake runs on: with the job's TLS (TCP only), the TLS server socket once the peer proved
   * it holds the job's certificate (read through 'data' events); else the accepted socket given the dialed
   * side's read path (large bodies read by the kernel straight into the message buffer), or 'data' events.
   */
  private async secure(accepted: net.Socket, remote: string): Promise<{ sock: net.Socket; input: DirectInput | null }> {
    const jobTls = this.addr.scheme === 'tcp' ? this.opts.auth.tls : undefined;
    accepted.setNoDelay(true);
    if (jobTls) return { sock: await jobTls.accept(accepted, remote, this.opts.handshakeTimeoutMs), input: null };
    const input = new DirectInput();
    const adopted = adoptWithDirectInput(accepted, input);
    if (!adopted) return { sock: accepted, input: null };
    adopted.on('error', () => {});
    adopted.setNoDelay(true);
    return { sock: adopted, input };
  }

  accept(opts?: IoOptions): Promise<Connection> {
    if (this.closedFlag) return Promise.reject(Errors.closed(`listener ${this.url}`));
    if (this.handedOut) return Promise.reject(Errors.state(`listener ${this.url} already accepted its one peer (pair semantics)`));
    return withDeadline(`accept on ${this.url}`, this.pending.promise, opts).then(
      (c) => {
        this.handedOut = true;
        return c;
      },
      (e: unknown) => {
        if (isShoalError(e, 'ERR_TIMEOUT') && this.rejectedHandshakes > 0) {
          throw new ShoalError('ERR_TIMEOUT', `${e.message} (${this.rejectedHandshakes} connection(s) dropped for a bad handshake; last: ${this.lastRejection})`, { ...e.context });
        }
        throw e;
      },
    );
  }

  async close(): Promise<void> {
    if (this.closedFlag) return;
    this.closedFlag = true;
    this.pending.reject(Errors.closed(`listener ${this.url}`));
    for (const sock of this.handshaking) sock.destroy();
    if (this.conn && !this.handedOut) await this.conn.close();
    if (this.server.listening) await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/** Bind `server` to `addr`; a unix socket file is made owner-only (0600) at once. */
export function listenOnce(server: net.Server, addr: NetAddress): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (e: Error) => {
      server.off('listening', onListening);
      reject(e);
    };
    const onListening = () => {
      server.off('error', onError);
      if (addr.scheme === 'ipc') {
        try {
          chmodSync(addr.path, 0o600);
        } catch (e) {
          server.close();
          reject(e);
          return;
        }
      }
      resolve();
    };
    server.once('error', onError);
    server.once('listening', onListening);
    if (addr.scheme === 'tcp') server.listen({ host: addr.host, port: addr.port, backlog: 16 });
    else server.listen({ path: addr.path, backlog: 16 });
  });
}

/** True when a unix socket file exists but nobody accepts on it (a crashed process left it behind). */
export function isStaleSocket(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ path });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ECONNREFUSED'));
  });
}
