import type { Baskets } from './prepare.js';

/** CSR lists: list i is `items[offsets[i] .. offsets[i+1])`, with `counts` aligned to `items`. */
export interface Lists { offsets: Int32Array; items: Int32Array; counts: Float32Array }

/**
 * The customer's history before each basket of `target`: distinct items from the same user's baskets in `past`
 * that are strictly earlier than the target basket (most recent first, at most `max`), each with the number of
 * those baskets that hold it (the repeat-buy signal). Unknown users (id 0) and first baskets get an empty list. `past` and `target` may be the same Baskets (training) or train and test.
 */
export function historyLists(past: Baskets, target: Baskets, max: number): Lists {
  const byUser = new Map<number, number[]>();
  for (let b = 0; b < past.users.length; b++) {
    const u = past.users[b]!;
    if (u === 0) continue;
    let l = byUser.get(u);
    if (l === undefined) { l = []; byUser.set(u, l); }
    l.push(b);
  }
  for (const l of byUser.values()) l.sort((a, b) => past.times[a]! - past.times[b]!);
  const offsets = new Int32Array(target.users.length + 1);
  const out: number[] = [];
  const cnt: number[] = [];
  const seen = new Map<number, number>();
  for (let b = 0; b < target.users.length; b++) {
    const l = target.users[b]! === 0 ? undefined : byUser.get(target.users[b]!);
    if (l !== undefined) {
      seen.clear();
      const t = target.times[b]!;
      // Baskets of this user earlier than t, newest first.
      let hi = l.length - 1;
      while (hi >= 0 && past.times[l[hi]!]! >= t) hi--;
      for (let i = hi; i >= 0; i--) {
        const pb = l[i]!;
        for (let x = past.offsets[pb]!; x < past.offsets[pb + 1]!; x++) {
          const it = past.items[x]!;
          const at = seen.get(it);
          if (at !== undefined) cnt[at]! += 1;
          else if (seen.size < max) { seen.set(it, out.length); out.push(it); cnt.push(1); }
        }
      }
    }
    offsets[b + 1] = out.length;
  }
  return { offsets, items: Int32Array.from(out), counts: Float32Array.from(cnt) };
}
