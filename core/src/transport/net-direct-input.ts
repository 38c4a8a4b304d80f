import * as net from 'node:net';

/**
 * The net transport's read path. Node's `onread` option (given to `net.connect` for a dialed socket, and to the
 * socket an accepted one's handle moves to, see `adoptWithDirectInput`) lets the kernel read large message bodies
 * straight into the buffer `recv` returns (about 5x less user CPU per GiB than 'data' events). Small reads go
 * through one scratch buffer.
 */

/** Receives what a socket reads. */
export interface ReadSink {
  /** A buffer to read straight into (the rest of a large message), or null to read into the scratch buffer. */
  target(): Uint8Array | null;
  /** Bytes read into the scratch buffer: valid only during the call. */
  bytes(chunk: Uint8Array): void;
  /** `n` bytes were read straight into `buf`, a buffer `target()` returned (maybe before a `recvInto` moved the message). */
  direct(n: number, buf: Uint8Array): void;
}

/** Reads smaller than this go through the scratch buffer (which may also pick up the next frame's header). */
export const DIRECT_READ_MIN = 64 * 1024;

/**
 * The read side of a socket, through Node's `onread` option (given to `net.connect` for a dialed socket, and to
 * the socket an accepted one's handle moves to, see `adoptWithDirectInput`): large message bodies are read by the kernel straight into the buffer `recv` returns, with no
 * per-read allocation and no copy. Until a sink is attached, bytes are kept and replayed to it.
 */
export class DirectInput {
  private readonly scratch = Buffer.allocUnsafe(64 * 1024);
  private sink: ReadSink | null = null;
  private queued: Buffer[] = [];
  readonly onread = {
    buffer: (): Uint8Array => this.sink?.target() ?? this.scratch,
    callback: (n: number, buf: Uint8Array): boolean => {
      if (buf !== this.scratch) this.sink!.direct(n, buf);
      else if (this.sink) this.sink.bytes(this.scratch.subarray(0, n));
      else this.queued.push(Buffer.from(this.scratch.subarray(0, n)));
      return true;
    },
  };

  attach(sink: ReadSink | null): void {
    this.sink = sink;
    if (!sink) return;
    const q = this.queued;
    this.queued = [];
    for (const b of q) sink.bytes(b);
  }
}

/**
 * Give an accepted socket the dialed side's read path: Node offers `onread` only to `net.connect`, so the paused
 * accepted socket (`pauseOnConnect`) hands its handle to a new `net.Socket` created with `onread` (the same
 * constructor path `net.connect` takes), and the old wrapper, without a handle, is destroyed (the server's
 * connection count drops as usual). Relies on `Socket._handle`, unchanged for many Node versions; when it is not
 * there the accepted socket keeps 'data' events (null).
 */
export function adoptWithDirectInput(sock: net.Socket, input: DirectInput): net.Socket | null {
  const s = sock as unknown as { _handle?: unknown };
  const handle = s._handle;
  if (handle === null || typeof handle !== 'object' || sock.readableFlowing === true) return null;
  try {
    s._handle = null;
    sock.destroy();
    return new net.Socket({ handle, readable: true, writable: true, onread: input.onread } as unknown as net.SocketConstructorOpts);
  } catch {
    return null;
  }
}

/** How the handshake gets bytes: a 'data' listener, or a DirectInput sink. */
export type Subscribe = (onData: (chunk: Buffer) => void) => () => void;

export function dataEvents(sock: net.Socket): Subscribe {
  return (onData) => {
    sock.on('data', onData);
    sock.resume();
    return () => {
      sock.off('data', onData);
      sock.pause();
    };
  };
}

export function directEvents(input: DirectInput): Subscribe {
  return (onData) => {
    input.attach({ target: () => null, bytes: (c) => onData(Buffer.from(c)), direct: () => {} });
    return () => input.attach(null);
  };
}
