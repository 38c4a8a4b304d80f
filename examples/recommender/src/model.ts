import type * as tfjs from '@tensorflow/tfjs';
import { LocalOptimizer, type DenseTensor, type ParameterState, type RowSparseTensor } from '@shoal/backends';
import { Errors } from '@shoal/core';
import { catalogFeatures, itemItemInverse, WIDE, wideFeatures, type ItemItemInverse, type Lists } from './features.js';
import { effectiveTable, effectiveView, featureGradient, featureRows } from './feature-views.js';
import type { Recommender } from './metrics.js';
import type { Baskets, Features, TestBaskets } from './prepare.js';
import { mixSeed, Rng } from '@shoal/core';

export type Tf = typeof tfjs;

export interface ModelOptions {
  /** Embedding size (default 32). */
  dim: number;
  /** MLP hidden units (default 64). */
  hidden: number;
  /** Uniform negatives per step for the sampled softmax, shared by every example of the batch (default 256). */
  negatives: number;
  /** Context items per training example, sampled from the rest of the basket (default 24). */
  maxContext: number;
  /** Most recent history items mean-pooled into the history embedding (default 50). */
  poolHistory: number;
  /**
   * Use the wide features next to the towers (default true): log(1 + times bought before), bought-before flag, and
   * with item-item weights (`setItemItem`, EASE) the basket's and the history's item-item scores of the candidate.
   */
  wide: boolean;
  /** Adam learning rate of the dense layers and the lazy (row-wise) Adam of the tables (default 0.01). */
  lr: number;
  /** Probability of replacing the user by the unknown user (id 0) in training, so cold users get a row (0.1). */
  userDropout: number;
  seed: number;
}

export const DEFAULT_MODEL: ModelOptions = { dim: 32, hidden: 64, negatives: 256, maxContext: 24, poolHistory: 50, wide: true, lr: 1e-2, userDropout: 0.1, seed: 7 };

/** An embedding table held as plain float rows (what a parameter server shard holds). */
export interface Table { name: string; numRows: number; rowSize: number; data: Float32Array }

/**
 * Where a step reads a table's rows: `data` holds them and `at(r)` is the offset of row r in it. A full table is
 * `{ data, at: (r) => r * rowSize }`; a worker with server-held tables passes the rows it pulled for the step.
 */
export interface RowView { readonly data: Float32Array; at(row: number): number }

/** A full table as a RowView. */
export function tableView(t: Table): RowView {
  const rs = t.rowSize, data = t.data;
  return { data, at: (r) => r * rs };
}

/** Rows `ids` (packed in that order in `rows`) as a RowView. */
export function packedView(ids: Int32Array, rows: Float32Array, rowSize: number): RowView {
  const pos = new Map<number, number>();
  for (let i = 0; i < ids.length; i++) pos.set(ids[i]!, i * rowSize);
  return {
    data: rows,
    at: (r) => {
      const o = pos.get(r);
      if (o === undefined) throw Errors.state(`row ${r} was not pulled for this step`);
      return o;
    },
  };
}

/**
 * The sampled inputs of one step, before any parameter is read: which examples, users, context and history
 * items, negatives, and the unique sorted rows each table needs (`rows`, in `tables()` order). Sampling depends
 * on seeds only, so a worker can plan a step and pull exactly its rows before computing.
 */
export interface BatchPlan {
  batch: readonly Example[];
  users: Int32Array;
  ctx: number[];
  ctxOff: Int32Array;
  /** Per example [start, end) into `hist.items` of the pooled history (empty for the unknown user). */
  histRange: Int32Array;
  posIds: Int32Array;
  negIds: Int32Array;
  /** Wide features of the targets [B, WIDE] and of the negatives [B, K, WIDE] (see `wideFeatures`). */
  fp: Float32Array; fn: Float32Array;
  /** Per table in `tables()` order: user, item-in, item-out, and the feature tokens when the model has features. */
  rows: Int32Array[];
}

/** One training example: basket `basket` of the training set with item index `target` (absolute into items). */
export interface Example { basket: number; target: number }

export interface StepGradients {
  loss: number;
  /** Same order and shapes as `BasketModel.dense`. Owned by the caller. */
  dense: DenseTensor[];
  /** One per table, unique sorted row ids. Owned by the caller. */
  sparse: RowSparseTensor[];
}

/**
 * The basket-completion model (MXNet-style two-tower recommender):
 *   user embedding u, pooled basket context c = mean of the visible items' input embeddings, pooled history h =
 *   mean of the user's earlier items' input embeddings; q = W2 relu(W1 [u; c; h] + b1) + b2;
 *   score(item j) = [q; 1] . out_j + w1 log(1 + n_uj) + w2 [n_uj > 0], where out_j is item j's output embedding with
 *   its bias as the last column and n_uj the number of the user's earlier baskets holding j (the wide, memorising
 *   part of a wide-and-deep model; off with `wide: false`).
 * Trained with a sampled softmax over the target and `negatives` uniform negatives shared by the batch.
 *
 * Embedding lookups and their gradients happen in JS on the row-sparse tables (only touched rows), so tfjs sees
 * small dense inputs and never differentiates tf.gather; the dense layers run in tfjs.
 */
export class BasketModel implements Recommender {
  readonly name = 'model';
  readonly opts: ModelOptions;
  readonly user: Table; readonly itemIn: Table; readonly itemOut: Table;
  /** W1 [3d, hidden], b1 [hidden], W2 [hidden, d], b2 [d], wide [WIDE]. */
  readonly dense: DenseTensor[];
  /** Adam on the dense layers: the parameter servers' optimizer (`adamUpdater`) run here. */
  private readonly optimizer: LocalOptimizer;
  private rng: Rng;
  private readonly grad: (args: tfjs.Tensor[]) => { value: tfjs.Scalar; grads: tfjs.Tensor[] };
  private outT: tfjs.Tensor2D | null = null;
  /** `towerGradients`' row accumulators (user, item-in, item-out), reused from step to step. */
  private rowAcc: [RowAcc, RowAcc, RowAcc] | null = null;
  /** The wide features of the step `grad` is computing (targets [B, 1, WIDE], negatives [B, K, WIDE]). */
  private stepFeatures: [tfjs.Tensor, tfjs.Tensor] | null = null;
  /** Negatives' feature arrays of recycled plans (`recycle`), taken by the next `plan` calls. */
  private readonly spareFn: Float32Array[] = [];

  constructor(private readonly tf: Tf, numUsers: number, readonly numItems: number, opts: Partial<ModelOptions> = {}, rankSeed = 0) {
    this.opts = { ...DEFAULT_MODEL, ...opts };
    const { dim: d, hidden: h } = this.opts;
    if (!(Number.isInteger(d) && d > 0 && Number.isInteger(h) && h > 0)) throw Errors.invalidArg('model dim/hidden', 'must be positive integers');
    const init = new Rng(this.opts.seed);
    const normal = (): number => { const u = Math.max(init.next(), 1e-12); return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * init.next()); };
    const table = (name: string, rows: number, size: number, std: number, biasCol = false): Table => {
      const data = new Float32Array(rows * size);
      for (let i = 0; i < data.length; i++) data[i] = biasCol && i % size === size - 1 ? 0 : normal() * std;
      return { name, numRows: rows, rowSize: size, data };
    };
    this.user = table('user_embedding', numUsers, d, 0.05);
    this.itemIn = table('item_in_embedding', numItems, d, 0.05);
    this.itemOut = table('item_out_embedding', numItems, d + 1, 0.05, true);
    const glorot = (name: string, fanIn: number, fanOut: number): DenseTensor => {
      const data = new Float32Array(fanIn * fanOut), lim = Math.sqrt(6 / (fanIn + fanOut));
      for (let i = 0; i < data.length; i++) data[i] = (init.next() * 2 - 1) * lim;
      return { name, shape: [fanIn, fanOut], data };
    };
    this.dense = [glorot('dense1/kernel', 3 * d, h), { name: 'dense1/bias', shape: [h], data: new Float32Array(h) },
      glorot('dense2/kernel', h, d), { name: 'dense2/bias', shape: [d], data: new Float32Array(d) },
      { name: 'wide/features', shape: [WIDE], data: new Float32Array(WIDE) }];
    this.optimizer = new LocalOptimizer({ type: 'adam', lr: this.opts.lr });
    this.rng = new Rng(this.opts.seed * 7919 + rankSeed + 1);
    // The wide features are constants of the step (`this.stepFeatures`), not arguments: tfjs then neither computes
    // nor downloads their gradient ([B, K, WIDE] floats, 1.3 MB a step at the defaults, garbage to collect).
    this.grad = tf.valueAndGrads((u, c, hh, pos, negT, w1, bb1, w2, bb2, wide) => {
      const [fp, fn] = this.stepFeatures!;
      const q = this.tower(u as tfjs.Tensor2D, c as tfjs.Tensor2D, hh as tfjs.Tensor2D, [w1, bb1, w2, bb2] as tfjs.Tensor[]);
      const qx = tf.concat([q, tf.onesLike(tf.slice(q, [0, 0], [-1, 1]))], 1);
      const sp = this.wideTerm(tf.sum(tf.mul(qx, pos!), 1, true), fp, wide!);
      const sn = this.wideTerm(tf.matMul(qx, negT as tfjs.Tensor2D), fn, wide!);
      return tf.mean(tf.sub(tf.logSumExp(tf.concat([sp, sn], 1), 1, true), sp)) as tfjs.Scalar;
    });
  }

  /** scores [B, n] + features [B, n, WIDE] . wide; returns scores unchanged when the wide part is off. */
  private wideTerm(scores: tfjs.Tensor, feats: tfjs.Tensor, wide: tfjs.Tensor): tfjs.Tensor {
    if (!this.opts.wide) return keepInGraph(scores, feats, wide, this.tf);
    const tf = this.tf;
    // Broadcast multiply and sum: WIDE = 5 products per score. (As a [B * n, WIDE] x [WIDE, 1] matMul its backward
    // once faulted on wasm: a stale operator cache in the stock kernel, fixed by registerShoalKernels, issue 20.)
    // The gradient is tfjs's own for mul-then-sum, minus its array of ones: the stock Sum gradient builds ones of the
    // features' shape in JS (1.3 MB of garbage a step for the negatives) to broadcast dy, which the broadcasting
    // mul does anyway. Same products, same reduction, so the same bits.
    const dot = tf.customGrad((w) => ({
      value: tf.sum(tf.mul(feats, w as tfjs.Tensor), -1),
      gradFunc: (dy: tfjs.Tensor) => tf.sum(tf.mul(tf.expandDims(dy, -1), feats), [0, 1]),
    }));
    return tf.add(scores, dot(wide));
  }

  tables(): Table[] { return this.feat ? [this.user, this.itemIn, this.itemOut, this.feat.table] : [this.user, this.itemIn, this.itemOut]; }

  /** Item / user features (config itemFeatures / userFeatures) and their token table, or null (`setFeatures`). */
  private feat: { f: Features; table: Table } | null = null;
  /** Effective full tables for scoring with features (user, item-in, item-out), rebuilt after parameters change. */
  private effective: [Float32Array, Float32Array, Float32Array] | null = null;

  /**
   * Add the feature tokens' embedding table `feature_embedding` (one row per token, seeded apart from the other
   * tables, so a model without features is unchanged). Call before training; null removes it.
   */
  setFeatures(f: Features | null): void {
    if (f === null || f.names.length === 0) { this.feat = null; this.invalidate(); return; }
    const d = this.opts.dim, init = new Rng(mixSeed(this.opts.seed, 0xfea7));
    const data = Float32Array.from({ length: f.names.length * d }, () => (init.next() * 2 - 1) * 0.05);
    this.feat = { f, table: { name: 'feature_embedding', numRows: f.names.length, rowSize: d, data } };
    this.invalidate();
  }

  /** Restart the sampling stream (negatives, context subsets, user dropout): same seed, same samples. */
  reseed(seed: number): void { this.rng = new Rng(seed); }

  private tower(u: tfjs.Tensor2D, c: tfjs.Tensor2D, h: tfjs.Tensor2D, w: tfjs.Tensor[]): tfjs.Tensor2D {
    const tf = this.tf;
    const x = tf.concat([u, c, h], 1);
    const a = tf.relu(tf.add(tf.matMul(x, w[0] as tfjs.Tensor2D), w[1]!));
    return tf.add(tf.matMul(a as tfjs.Tensor2D, w[2] as tfjs.Tensor2D), w[3]!) as tfjs.Tensor2D;
  }

  private denseTensors(): tfjs.Tensor[] { return this.dense.map((p) => this.tf.tensor(p.data, p.shape as number[])); }

  /** Mean of the `itemIn` rows (read through `view`) of `list[s..e)` into out[o..o+d); zeros when empty. */
  private pool(view: RowView, list: ArrayLike<number>, s: number, e: number, out: Float32Array, o: number): void {
    const d = this.opts.dim, tab = view.data;
    if (e <= s) return;
    const inv = 1 / (e - s);
    for (let x = s; x < e; x++) { const r = view.at(list[x]!); for (let k = 0; k < d; k++) out[o + k]! += tab[r + k]! * inv; }
  }

  /** Drop the local copies of the tables (server-held tables: the servers own them; load them back with setTable). */
  releaseTables(): void {
    for (const t of this.tables()) t.data = new Float32Array(0);
    this.invalidate();
  }

  /** Install a full table (e.g. pulled from the servers for evaluation). Takes ownership of `data`. */
  setTable(name: string, data: Float32Array): void {
    const t = this.tables().find((x) => x.name === name);
    if (t === undefined) throw Errors.state(`no table named ${name}`);
    if (data.length !== t.numRows * t.rowSize) throw Errors.invalidArg(`table ${name}`, `needs ${t.numRows * t.rowSize} values, got ${data.length}`);
    t.data = data;
    this.invalidate();
  }

  /** A copy of every parameter (tables and dense layers), for `restore`. */
  snapshot(): { tables: Float32Array[]; dense: Float32Array[] } {
    return { tables: this.tables().map((t) => Float32Array.from(t.data)), dense: this.dense.map((p) => Float32Array.from(p.data)) };
  }

  /** Put back the parameters of a `snapshot` (the optimizer state is not restored: for evaluation). */
  restore(s: { tables: Float32Array[]; dense: Float32Array[] }): void {
    this.tables().forEach((t, k) => { t.data = s.tables[k]!; });
    this.dense.forEach((p, k) => p.data.set(s.dense[k]!));
    this.invalidate();
  }

  /** Bytes of the tables this model holds now (0 after releaseTables). */
  heldTableBytes(): number {
    return this.tables().reduce((b, t) => b + t.data.byteLength, 0);
  }

  /**
   * Gradients of the mean sampled-softmax loss over `batch` (examples from `train`, histories `hist` aligned with
   * train baskets). Does not change parameters. Returns fresh arrays the caller owns.
   *
   * Sampling (negatives, context subsets, user dropout) comes from the model's own stream, or, with `sampling`,
   * from seeds of the step and of each example's index in the global batch: then a step split over N workers
   * draws exactly what one worker with the whole batch draws, so N-worker training follows the 1-worker path.
   */
  async computeGradients(train: Baskets, hist: Lists, batch: readonly Example[], sampling?: { stepSeed: number; firstIndex: number }): Promise<StepGradients> {
    return this.gradients(this.plan(train, hist, batch, sampling), hist, this.tables().map(tableView));
  }

  /**
   * Sample one step (see computeGradients for the sampling streams) without reading any parameter. Returns the
   * plan `gradients` takes, with the rows each table needs.
   */
  plan(train: Baskets, hist: Lists, batch: readonly Example[], sampling?: { stepSeed: number; firstIndex: number }): BatchPlan {
    const { negatives: K, maxContext } = this.opts, B = batch.length;
    if (B === 0) throw Errors.invalidArg('batch', 'must not be empty');
    const N = this.numItems;
    const users = new Int32Array(B), posIds = new Int32Array(B), negIds = new Int32Array(K), histRange = new Int32Array(2 * B);
    const ctxOff = new Int32Array(B + 1); const ctx: number[] = [];
    const needUser = new Set<number>(), needIn = new Set<number>(), needOut = new Set<number>();
    const stepRng = sampling ? new Rng(mixSeed(sampling.stepSeed, 0x9e3779b9)) : this.rng;
    for (let i = 0; i < B; i++) {
      const rng = sampling ? new Rng(mixSeed(sampling.stepSeed, sampling.firstIndex + i + 1)) : this.rng;
      const { basket, target } = batch[i]!;
      const s = train.offsets[basket]!, e = train.offsets[basket + 1]!;
      const user = rng.next() < this.opts.userDropout ? 0 : train.users[basket]!;
      users[i] = user;
      needUser.add(user);
      // Context: the rest of the basket, at most maxContext of it chosen at random.
      const others: number[] = [];
      for (let x = s; x < e; x++) if (x !== target) others.push(train.items[x]!);
      if (others.length > maxContext) { rng.shuffle(others); others.length = maxContext; }
      for (const it of others) { ctx.push(it); needIn.add(it); }
      ctxOff[i + 1] = ctx.length;
      if (user !== 0) {
        const hs = hist.offsets[basket]!, he = Math.min(hist.offsets[basket + 1]!, hs + this.opts.poolHistory);
        histRange[2 * i] = hs; histRange[2 * i + 1] = he;
        for (let x = hs; x < he; x++) needIn.add(hist.items[x]!);
      }
      const t = train.items[target]!;
      posIds[i] = t;
      needOut.add(t);
    }
    // Negatives shared by the batch.
    for (let k = 0; k < K; k++) {
      const j = stepRng.int(N);
      negIds[k] = j; needOut.add(j);
    }
    const { fp, fn } = wideFeatures(train, batch, users, posIds, negIds, hist, ctx, ctxOff, histRange, this.itemItem, this.spareFn.pop());
    const sorted = (x: Set<number>): Int32Array => Int32Array.from(x).sort();
    const rows = [sorted(needUser), sorted(needIn), sorted(needOut)];
    if (this.feat) rows.push(featureRows(this.feat.f, rows[0]!, [rows[1]!, rows[2]!]));
    return { batch, users, ctx, ctxOff, histRange, posIds, negIds, fp, fn, rows };
  }

  /**
   * Hand back plans whose gradients are computed and that will not be used again: the next plans reuse their
   * negatives' features array ([B, K, WIDE], 1.3 MB a step at the defaults) instead of allocating one. The plans
   * are emptied (their `fn` becomes a zero-length array), so a late reuse fails instead of reading other values.
   */
  recycle(plans: readonly BatchPlan[]): void {
    for (const p of plans) { if (p.fn.length > 0) this.spareFn.push(p.fn); p.fn = new Float32Array(0); }
    this.spareFn.length = Math.min(this.spareFn.length, plans.length);
  }

  /**
   * Gradients of the mean sampled-softmax loss of a planned step, reading table rows through `views` (user,
   * item-in, item-out: at least the plan's rows). Does not change parameters. Returns fresh arrays the caller
   * owns; the row-sparse gradients cover exactly the plan's rows.
   */
  async gradients(p: BatchPlan, hist: Lists, views: readonly RowView[]): Promise<StepGradients> {
    if (!this.feat) return this.towerGradients(p, hist, views);
    // Features: compute on the effective rows, then route their gradients to the tokens too (feature-views.ts).
    const { f, table } = this.feat, d = this.opts.dim, fv = views[3]!;
    const eff = [effectiveView(views[0]!, fv, f.user, p.rows[0]!, d, d), effectiveView(views[1]!, fv, f.item, p.rows[1]!, d, d), effectiveView(views[2]!, fv, f.item, p.rows[2]!, d + 1, d)];
    const g = await this.towerGradients(p, hist, eff);
    g.sparse.push(featureGradient(f, g.sparse, table, p.rows[3]!));
    return g;
  }

  /** `gradients` on the user / item-in / item-out rows in `views` (effective rows when the model has features). */
  private async towerGradients(p: BatchPlan, hist: Lists, views: readonly RowView[]): Promise<StepGradients> {
    const tf = this.tf, { dim: d, negatives: K } = this.opts, B = p.batch.length;
    const d1 = d + 1;
    const [userV, inV, outV] = views as [RowView, RowView, RowView];
    const u = new Float32Array(B * d), c = new Float32Array(B * d), h = new Float32Array(B * d);
    const pos = new Float32Array(B * d1), negT = new Float32Array(d1 * K);
    const { users, ctx, ctxOff, histRange, posIds, negIds, fp, fn } = p;
    for (let i = 0; i < B; i++) {
      const uo = userV.at(users[i]!);
      u.set(userV.data.subarray(uo, uo + d), i * d);
      this.pool(inV, ctx, ctxOff[i]!, ctxOff[i + 1]!, c, i * d);
      this.pool(inV, hist.items, histRange[2 * i]!, histRange[2 * i + 1]!, h, i * d);
      const po = outV.at(posIds[i]!);
      pos.set(outV.data.subarray(po, po + d1), i * d1);
    }
    // Negatives laid out transposed [d+1, K] so the logits are one plain matMul.
    for (let k = 0; k < K; k++) {
      const o = outV.at(negIds[k]!);
      for (let x = 0; x < d1; x++) negT[x * K + k] = outV.data[o + x]!;
    }
    const dt = this.denseTensors();
    const inputs = [tf.tensor2d(u, [B, d]), tf.tensor2d(c, [B, d]), tf.tensor2d(h, [B, d]), tf.tensor2d(pos, [B, d1]), tf.tensor2d(negT, [d1, K])];
    const feats: [tfjs.Tensor, tfjs.Tensor] = [tf.tensor3d(fp, [B, 1, WIDE]), tf.tensor3d(fn, [B, K, WIDE])];
    this.stepFeatures = feats;
    let lossT: tfjs.Scalar, grads: tfjs.Tensor[];
    try { ({ value: lossT, grads } = this.grad([...inputs, ...dt])); } finally { this.stepFeatures = null; }
    const vals = await Promise.all(grads.map((g) => g.data() as Promise<Float32Array>));
    const loss = (await lossT.data())[0]!;
    tf.dispose([...inputs, ...feats, ...dt, ...grads, lossT]);
    if (!Number.isFinite(loss)) throw Errors.nan('recommender training loss', { batch: B });
    const [gu, gc, gh, gpos, gnegT] = vals as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array];

    // Scatter the input gradients onto the touched table rows.
    const [userG, inG, outG] = this.rowAcc ??= [new RowAcc(d, this.user.numRows), new RowAcc(d, this.numItems), new RowAcc(d1, this.numItems)];
    for (let i = 0; i < B; i++) {
      userG.add(users[i]!, gu, i * d, 1);
      const s = ctxOff[i]!, e = ctxOff[i + 1]!;
      for (let x = s; x < e; x++) inG.add(ctx[x]!, gc, i * d, 1 / (e - s));
      const hs = histRange[2 * i]!, he = histRange[2 * i + 1]!;
      for (let x = hs; x < he; x++) inG.add(hist.items[x]!, gh, i * d, 1 / (he - hs));
      outG.add(posIds[i]!, gpos, i * d1, 1);
    }
    const gneg = new Float32Array(K * d1);
    for (let x = 0; x < d1; x++) for (let k = 0; k < K; k++) gneg[k * d1 + x] = gnegT[x * K + k]!;
    for (let k = 0; k < K; k++) outG.add(negIds[k]!, gneg, k * d1, 1);
    return {
      loss,
      dense: this.dense.map((q, i) => ({ name: q.name, shape: q.shape, data: vals[inputs.length + i]! })),
      sparse: [userG.finish(this.user), inG.finish(this.itemIn), outG.finish(this.itemOut)],
    };
  }

  /**
   * Apply (already averaged) dense-layer gradients with Adam. The tables are stepped where they live
   * (`EmbeddingTables.push`: on the servers, or the same lazy Adam on every rank).
   */
  applyDenseGradients(dense: readonly DenseTensor[]): void {
    dense.forEach((g, i) => this.optimizer.step(this.dense[i]!.name, this.dense[i]!.data, g.data));
    this.invalidate();
  }

  /** A copy of the dense layers' Adam state (moments and step counts), for a checkpoint. */
  denseOptimizerState(): Record<string, ParameterState> { return this.optimizer.exportState(); }

  /** Put back a checkpoint's dense values and their Adam state (`denseOptimizerState`), so training goes on exactly. */
  setDenseState(values: readonly Float32Array[], opt: Readonly<Record<string, ParameterState>>): void {
    if (values.length !== this.dense.length || values.some((v, i) => v.length !== this.dense[i]!.data.length)) {
      throw Errors.data('checkpoint', `holds dense layers of ${values.map((v) => v.length).join(', ')} values, the model has ${this.dense.map((p) => p.data.length).join(', ')}`);
    }
    values.forEach((v, i) => this.dense[i]!.data.set(v));
    this.optimizer.importState(opt);
    this.invalidate();
  }

  /** Drop the cached output matrix (call after parameters change outside applyGradients, e.g. a broadcast). */
  invalidate(): void { this.outT?.dispose(); this.outT = null; this.effective = null; }

  /** The user, item-in and item-out tables scoring reads: the tables themselves, or with features their effective rows. */
  private scoringTables(): [Float32Array, Float32Array, Float32Array] {
    if (!this.feat) return [this.user.data, this.itemIn.data, this.itemOut.data];
    const { f, table } = this.feat, d = this.opts.dim, fv = tableView(table);
    this.effective ??= [effectiveTable(tableView(this.user), fv, f.user, this.user.numRows, d, d), effectiveTable(tableView(this.itemIn), fv, f.item, this.numItems, d, d),
      effectiveTable(tableView(this.itemOut), fv, f.item, this.numItems, d + 1, d)];
    return this.effective;
  }

  /** Histories for test baskets, set before evaluation (aligned with the test baskets). */
  testHistory: Lists | null = null;

  /**
   * Weight of the towers' score [q; 1] . out_j against the wide features when scoring (1 in training). Model
   * selection picks it on validation (`TOWER_SCALES`): how far the learned towers help beyond the wide part.
   */
  towerScale = 1;

  /** EASE's inverse P and the co-occurrence counts (numItems^2 each) behind the item-item wide features, or null (those features stay 0). */
  private itemItem: ItemItemInverse | null = null;
  setItemItem(s: { p: Float32Array; gram: Float32Array } | null): void {
    if (s !== null && (s.p.length !== this.numItems ** 2 || s.gram.length !== this.numItems ** 2)) {
      throw Errors.invalidArg('EASE inverse / Gram matrix', `need ${this.numItems}^2 values, got ${s.p.length} / ${s.gram.length}`);
    }
    this.itemItem = s === null ? null : itemItemInverse(s.p, s.gram, this.numItems);
  }

  scoreBatch(test: TestBaskets, from: number, to: number, out: Float32Array): void {
    const tf = this.tf, d = this.opts.dim, d1 = d + 1, N = this.numItems, B = to - from;
    const [userT, inT, outTable] = this.scoringTables();
    if (this.outT === null) {
      const t = new Float32Array(d1 * N);
      for (let j = 0; j < N; j++) for (let k = 0; k < d1; k++) t[k * N + j] = outTable[j * d1 + k]!;
      this.outT = tf.tensor2d(t, [d1, N]);
    }
    const u = new Float32Array(B * d), c = new Float32Array(B * d), h = new Float32Array(B * d);
    const th = this.testHistory;
    const userV: RowView = { data: userT, at: (r) => r * d }, inV: RowView = { data: inT, at: (r) => r * d };
    for (let b = from; b < to; b++) {
      const i = b - from, user = test.users[b]!;
      u.set(userV.data.subarray(user * d, user * d + d), i * d);
      this.pool(inV, test.items, test.offsets[b]!, test.offsets[b + 1]!, c, i * d);
      if (user !== 0 && th !== null) {
        const hs = th.offsets[b]!, he = th.offsets[b + 1]!;
        this.pool(inV, th.items, hs, Math.min(he, hs + this.opts.poolHistory), h, i * d);
      }
    }
    const feats = this.opts.wide ? catalogFeatures(test, from, to, th, this.opts.poolHistory, this.itemItem, N) : new Float32Array(B * N * WIDE);
    const outT = this.outT;
    const scores = tf.tidy(() => {
      const dt = this.denseTensors();
      const q = this.tower(tf.tensor2d(u, [B, d]), tf.tensor2d(c, [B, d]), tf.tensor2d(h, [B, d]), dt);
      return this.wideTerm(tf.mul(tf.matMul(tf.concat([q, tf.ones([B, 1])], 1), outT), this.towerScale), tf.tensor3d(feats, [B, N, WIDE]), dt[4]!);
    });
    out.set(scores.dataSync() as Float32Array, 0);
    scores.dispose();
  }
}

/**
 * Accumulates gradient rows per table row id; `finish` returns them as a RowSparseTensor with sorted ids and
 * leaves the accumulator empty for the next step, keeping its buffers (fresh ones each step were a third of a
 * step's garbage, and the major GCs it caused paused one rank while the other waited).
 */
class RowAcc {
  /** Table row -> its slot in `buf` (-1: not touched yet); `rows` lists the touched rows in slot order. */
  private readonly slot: Int32Array;
  private readonly rows: number[] = [];
  private buf: Float32Array;
  constructor(private readonly size: number, numRows: number) {
    this.buf = new Float32Array(size * 64);
    this.slot = new Int32Array(numRows).fill(-1);
  }
  add(row: number, src: Float32Array, off: number, scale: number): void {
    let i = this.slot[row]!;
    if (i < 0) {
      i = this.rows.length; this.slot[row] = i; this.rows.push(row);
      if ((i + 1) * this.size > this.buf.length) { const nb = new Float32Array(this.buf.length * 2); nb.set(this.buf); this.buf = nb; }
    }
    const o = i * this.size;
    for (let k = 0; k < this.size; k++) this.buf[o + k]! += src[off + k]! * scale;
  }
  finish(t: Table): RowSparseTensor {
    const ids = Int32Array.from(this.rows).sort();
    const rows = new Float32Array(ids.length * this.size);
    ids.forEach((id, r) => { const o = this.slot[id]! * this.size; rows.set(this.buf.subarray(o, o + this.size), r * this.size); });
    for (const id of this.rows) this.slot[id] = -1;
    this.buf.fill(0, 0, this.rows.length * this.size);
    this.rows.length = 0;
    return { name: t.name, numRows: t.numRows, rowSize: t.rowSize, rowIds: ids, rows };
  }
}

/** `scores` plus 0 * (sum(wide) + sum(feats)): keeps the wide weights and features in the gradient graph (zero gradient) when the wide part is off. */
function keepInGraph(scores: tfjs.Tensor, feats: tfjs.Tensor, wide: tfjs.Tensor, tf: Tf): tfjs.Tensor {
  return tf.add(scores, tf.mul(tf.add(tf.sum(wide), tf.sum(feats)), 0));
}
