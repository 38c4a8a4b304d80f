// The nng addon's surface (core/native/nng/src/addon.cc) and its loader, for the nng transport (nng.ts).
import { createRequire } from 'node:module';
import { Errors } from '../errors.js';

/** The addon's surface (core/native/nng/src/addon.cc). */
export interface NativePair {
  listen(url: string): number;
  dial(url: string): void;
  /** True: written inline (a lone small frame, now in the kernel); no EV_SEND covers it. */
  send(id: number, data: Uint8Array, flush: boolean): boolean;
  setRxPaused(paused: boolean): void;
  setMaxMessage(bytes: number): void;
  close(): void;
  ref(): void;
  unref(): void;
}
export type EventFn = (kind: number, id: number, rv: number, data: Uint8Array | undefined, lens: Uint32Array | undefined) => void;
export interface NngAddon {
  NngPair: new (onEvent: EventFn, maxMessageBytes: number) => NativePair;
  strerror(rv: number): string;
  constants: {
    EV_CONNECTED: number;
    EV_MSG: number;
    EV_RX_END: number;
    EV_SEND: number;
    EV_DIAL_FAIL: number;
    EV_CLOSED: number;
    EV_BAD_FRAME: number;
    EV_MSGS: number;
    ECLOSED: number;
    ECONNSHUT: number;
    ECONNRESET: number;
    ETIMEDOUT: number;
    version: string;
  };
}

/** Load the addon (Node caches it per process). Throws ERR_TRANSPORT saying how to build it when missing. */
export function loadNngAddon(addonPath?: string): NngAddon {
  const path = addonPath ?? new URL('../../native/nng/build/Release/shoal_nng.node', import.meta.url).pathname;
  try {
    return createRequire(import.meta.url)(path) as NngAddon;
  } catch (e) {
    throw Errors.transport(
      'nng',
      `cannot load the nng addon at ${path} (${(e as Error).message}); build it with \`npm rebuild @shoal/core\` (installed package) or \`npm run build:native -w @shoal/core\` (checkout); needs the libnng-dev package`,
      e,
    );
  }
}
