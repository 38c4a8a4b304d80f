import { Errors } from '../errors.js';
import { DEFAULT_TIMEOUT_MS } from '../transport/transport.js';
import { asBytes, PrefixStore, type Store } from './store.js';

/** In-process store for tests where all ranks share one process. */
export class MemoryStore implements Store {
  private readonly data = new Map<string, Uint8Array>();
  private readonly watchers = new Set<() => void>();
  async set(key: string, value: Uint8Array | string): Promise<void> {
    this.data.set(key, new Uint8Array(asBytes(value)));
    for (const w of [...this.watchers]) w();
  }
  async get(key: string, timeoutMs = DEFAULT_TIMEOUT_MS): Promise<Uint8Array> {
    await this.wait([key], timeoutMs);
    return this.data.get(key)!;
  }
  wait(keys: readonly string[], timeoutMs = DEFAULT_TIMEOUT_MS): Promise<void> {
    const ready = () => keys.every((k) => this.data.has(k));
    if (ready()) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.watchers.delete(check);
        const missing = keys.filter((k) => !this.data.has(k));
        reject(Errors.timeout(`store wait for [${missing.slice(0, 5).join(', ')}]`, timeoutMs));
      }, timeoutMs);
      const check = () => {
        if (!ready()) return;
        clearTimeout(timer);
        this.watchers.delete(check);
        resolve();
      };
      this.watchers.add(check);
    });
  }
  async add(key: string, delta: number): Promise<number> {
    const cur = this.data.get(key);
    const v = (cur ? Number(new TextDecoder().decode(cur)) : 0) + delta;
    await this.set(key, String(v));
    return v;
  }
  prefixed(prefix: string): Store {
    return new PrefixStore(this, prefix);
  }
}
