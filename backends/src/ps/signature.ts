import { Errors } from '@shoal/core';

/**
 * What every rank contributes before a collective of `PsSync`: its tensors' names and shapes and the first one
 * holding NaN/Inf (null when all are finite). Ranks agree when every rank's names and shapes equal rank 0's and
 * no rank saw a non-finite value.
 */
export interface Signature {
  names: string[];
  shapes: string[];
  nan: string | null;
}

/**
 * Check the signatures of every rank (`all`, in rank order) for collective `op`; throw the ERR_MISMATCH or ERR_NAN
 * every rank throws alike (`rank`: the rank that throws, for the error's context). Used by the workers on the
 * gathered signatures and by the servers before they apply a guarded request (`KVServer.guarded`), so both
 * reach the same verdict.
 */
export function checkSignatures(op: string, all: readonly Signature[], rank: number): void {
  const me = all[0]!;
  for (let r = 1; r < all.length; r++) {
    const o = all[r]!;
    if (o.names.length !== me.names.length) {
      throw Errors.mismatch(op, `rank 0 passes ${me.names.length} tensors (${me.names.map((n) => JSON.stringify(n)).join(', ')}), rank ${r} passes ${o.names.length} (${o.names.map((n) => JSON.stringify(n)).join(', ')})`, { rank });
    }
    for (let i = 0; i < me.names.length; i++) {
      if (o.names[i] !== me.names[i]) throw Errors.mismatch(op, `tensor ${i} is "${me.names[i]}" on rank 0 but "${o.names[i]}" on rank ${r}`, { rank });
      if (o.shapes[i] !== me.shapes[i]) throw Errors.mismatch(op, `tensor "${me.names[i]}" has shape ${me.shapes[i]} on rank 0 but ${o.shapes[i]} on rank ${r}`, { rank });
    }
  }
  const bad = all.findIndex((s) => s.nan !== null);
  if (bad >= 0) throw Errors.nan(`gradient "${all[bad]!.nan}" on rank ${bad} (${op})`, { rank, badRank: bad });
}

/** True when `all` are well-formed signatures that agree (see `checkSignatures`); never throws. */
export function signaturesAgree(op: string, all: readonly unknown[]): boolean {
  const ok = (s: unknown): s is Signature => {
    const x = s as Signature | null;
    return x !== null && typeof x === 'object' && Array.isArray(x.names) && Array.isArray(x.shapes) && (x.nan === null || typeof x.nan === 'string');
  };
  if (all.length === 0 || !all.every(ok)) return false;
  try {
    checkSignatures(op, all, 0);
    return true;
  } catch {
    return false;
  }
}
