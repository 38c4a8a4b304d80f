/* shoal kernels (kernels.h): the parameter server's updates: a linear rule in one pass (sumUpdate) and the
 * optimizers (optim: Adam, Adagrad, SGD), bit-identical to the JS reference. */
#include <math.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "shoal_reduce.h"
#ifdef SHOAL_X86
#include <immintrin.h>
#endif

/* The parameter server's update of a linear rule in one pass over memory: per block of SUM_BLOCK elements (on the
 * stack, in L1), tmp = g[0] + g[1] + ... (in that order), then w = tmp (assign) or tmp *= f; w += tmp (axpy),
 * then every out[k] = w. Each step is the same loop, in the same order, as the separate kernels (sum3/sum, scale,
 * sum), so the results are bit-identical to running those over whole arrays; the gradients are only read. */
#define SUM_BLOCK 2048
/* Copies to the outputs of a large update bypass the cache (streaming stores): they are read much later, by
 * another process, and a normal store would first read each line in (read-for-ownership). */
#define STREAM_MIN_BYTES (4u << 20)
static void copy_out(void *dst, const void *src, size_t bytes, int stream) {
#ifdef SHOAL_X86
  if (stream) {
    uint8_t *d = (uint8_t *)dst;
    const uint8_t *s = (const uint8_t *)src;
    size_t head = (16 - ((uintptr_t)d & 15)) & 15;
    if (head > bytes) head = bytes;
    memcpy(d, s, head);
    d += head, s += head, bytes -= head;
    size_t body = bytes & ~(size_t)63;
    for (size_t i = 0; i < body; i += 64) {
      __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
      __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
      __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
      __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
      _mm_stream_si128((__m128i *)(d + i), a);
      _mm_stream_si128((__m128i *)(d + i + 16), b);
      _mm_stream_si128((__m128i *)(d + i + 32), c);
      _mm_stream_si128((__m128i *)(d + i + 48), e);
    }
    memcpy(d + body, s + body, bytes - body);
    return;
  }
#endif
  (void)stream;
  memcpy(dst, src, bytes);
}
static void stream_fence(void) {
#ifdef SHOAL_X86
  _mm_sfence(); /* streaming stores are weakly ordered: visible before the reply that announces them */
#endif
}
#define DEF_SUM_UPDATE(T, NAME)                                                                                  \
  static void sum_update_##NAME(int axpy, T *w, const T **g, size_t ng, T **out, size_t no, T f, size_t n) {    \
    T tmp[SUM_BLOCK];                                                                                           \
    int stream = n * sizeof(T) >= STREAM_MIN_BYTES;                                                             \
    for (size_t b = 0; b < n; b += SUM_BLOCK) {                                                                 \
      size_t m = n - b < SUM_BLOCK ? n - b : SUM_BLOCK;                                                         \
      if (ng == 1) memcpy(tmp, g[0] + b, m * sizeof(T));                                                        \
      else shoal_##NAME##_sum3(tmp, g[0] + b, g[1] + b, m);                                                      \
      for (size_t r = 2; r < ng; r++) shoal_##NAME##_sum(tmp, g[r] + b, m);                                     \
      if (axpy) {                                                                                               \
        shoal_scale_##NAME(tmp, f, m);                                                                          \
        shoal_##NAME##_sum(w + b, tmp, m);                                                                      \
      } else {                                                                                                  \
        memcpy(w + b, tmp, m * sizeof(T));                                                                      \
      }                                                                                                         \
      for (size_t k = 0; k < no; k++) copy_out(out[k] + b, w + b, m * sizeof(T), stream);                       \
    }                                                                                                           \
    if (stream && no) stream_fence();                                                                           \
  }
DEF_SUM_UPDATE(float, f32)
DEF_SUM_UPDATE(double, f64)

/* sumUpdate(axpy: boolean, w, grads: array[], outs: array[], factor) */
napi_value js_sum_update(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  if (!get_args(env, info, 5, argv)) return NULL;
  bool axpy = false;
  if (napi_get_value_bool(env, argv[0], &axpy) != napi_ok) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sumUpdate: axpy must be a boolean");
    return NULL;
  }
  view_t w;
  if (!get_view(env, argv[1], &w, "weights")) return NULL;
  if (w.type != napi_float32_array && w.type != napi_float64_array) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sumUpdate needs Float32Array or Float64Array weights");
    return NULL;
  }
  bool ga = false, oa = false;
  napi_is_array(env, argv[2], &ga);
  napi_is_array(env, argv[3], &oa);
  uint32_t ng = 0, no = 0;
  if (ga) napi_get_array_length(env, argv[2], &ng);
  if (oa) napi_get_array_length(env, argv[3], &no);
  if (!ga || !oa || ng < 1) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sumUpdate needs an array of at least one gradient and an array of outputs");
    return NULL;
  }
  void **p = (void **)malloc(sizeof(void *) * (ng + no));
  if (!p) {
    napi_throw_error(env, "ERR_NO_MEMORY", "sumUpdate: out of memory");
    return NULL;
  }
  for (uint32_t i = 0; i < ng + no; i++) {
    napi_value e;
    napi_get_element(env, i < ng ? argv[2] : argv[3], i < ng ? i : i - ng, &e);
    view_t v;
    if (!get_view(env, e, &v, i < ng ? "gradient" : "output")) {
      free(p);
      return NULL;
    }
    if (v.type != w.type || v.length != w.length) {
      free(p);
      napi_throw_type_error(env, "ERR_INVALID_ARG", "sumUpdate: every gradient and output must match the weights' type and length");
      return NULL;
    }
    p[i] = v.data;
  }
  double f = 0;
  if (napi_get_value_double(env, argv[4], &f) != napi_ok) {
    free(p);
    napi_throw_type_error(env, "ERR_INVALID_ARG", "sumUpdate: factor must be a number");
    return NULL;
  }
  if (w.type == napi_float32_array) sum_update_f32(axpy, (float *)w.data, (const float **)p, ng, (float **)(p + ng), no, (float)f, w.length);
  else sum_update_f64(axpy, (double *)w.data, (const double **)p, ng, (double **)(p + ng), no, f, w.length);
  free(p);
  return NULL;
}

/* ---- the parameter server's optimizers ----
 * Each optimizer step runs over "runs": the whole array (rows == NULL, one run of n elements, gradient at 0) or one
 * run per row (weights row rows[i], gradient packed at i * rowSize). The arithmetic is in double, in the order of
 * the JS reference (backends/src/ps/updaters.ts), with every stored value rounded to the array's type, so results
 * are bit-identical to it (no FMA: -ffp-contract=off). */
#define RUNS_BEGIN                                                   \
  size_t runs = rows ? nrows : 1, len = rows ? rowSize : n;          \
  for (size_t r = 0; r < runs; r++) {                                \
    size_t wo = rows ? (size_t)rows[r] * len : 0, go = r * len;
#define RUNS_END }

#define DEF_OPTIM(T, NAME)                                                                                       \
  CLONES static void adam_##NAME(T *w, const T *g, T *m, T *v, const int32_t *rows, size_t nrows, size_t rowSize, \
                                 size_t n, const double *lrRows, double lrKey, double b1, double b2, double eps,    \
                                 double wd, double rs) {                                                            \
    RUNS_BEGIN                                                                                                    \
    double lrT = lrRows ? lrRows[r] : lrKey;                                                                      \
    for (size_t i = 0; i < len; i++) {                                                                            \
      size_t j = wo + i;                                                                                          \
      double gi = rs * (double)g[go + i] + wd * (double)w[j];                                                     \
      double mj = b1 * (double)m[j] + (1 - b1) * gi;                                                              \
      double vj = b2 * (double)v[j] + (1 - b2) * gi * gi;                                                         \
      m[j] = (T)mj;                                                                                               \
      v[j] = (T)vj;                                                                                               \
      w[j] = (T)((double)w[j] - (lrT * mj) / (sqrt(vj) + eps));                                                   \
    }                                                                                                             \
    RUNS_END                                                                                                      \
  }                                                                                                               \
  CLONES static void adagrad_##NAME(T *w, const T *g, T *h, const int32_t *rows, size_t nrows, size_t rowSize,     \
                                    size_t n, double lr, double eps, double wd, double rs) {                       \
    RUNS_BEGIN                                                                                                    \
    for (size_t i = 0; i < len; i++) {                                                                            \
      size_t j = wo + i;                                                                                          \
      double gi = rs * (double)g[go + i] + wd * (double)w[j];                                                     \
      double hj = (double)h[j] + gi * gi;                                                                         \
      h[j] = (T)hj;                                                                                               \
      w[j] = (T)((double)w[j] - (lr * gi) / (sqrt(hj) + eps));                                                    \
    }                                                                                                             \
    RUNS_END                                                                                                      \
  }                                                                                                               \
  CLONES static void sgd_##NAME(T *w, const T *g, T *mom, const int32_t *rows, size_t nrows, size_t rowSize,       \
                                size_t n, double lr, double mu, double wd, double rs) {                            \
    RUNS_BEGIN                                                                                                    \
    for (size_t i = 0; i < len; i++) {                                                                            \
      size_t j = wo + i;                                                                                          \
      if (mom) {                                                                                                  \
        double u = mu * (double)mom[j] - lr * (rs * (double)g[go + i] + wd * (double)w[j]);                       \
        mom[j] = (T)u;                                                                                            \
        w[j] = (T)((double)w[j] + u);                                                                             \
      } else {                                                                                                    \
        w[j] = (T)((double)w[j] - lr * (rs * (double)g[go + i] + wd * (double)w[j]));                            \
      }                                                                                                           \
    }                                                                                                             \
    RUNS_END                                                                                                      \
  }
DEF_OPTIM(float, f32)
DEF_OPTIM(double, f64)

/* optim(kind, w, g, s1, s2, rows, rowSize, lrRows, p0, p1, p2, p3, p4, p5)
 *   kind 0 adam: s1 = m, s2 = v, p = lrKey, b1, b2, eps, wd, rescale (lrRows: per-row lr or null)
 *   kind 1 adagrad: s1 = history, p = lr, eps, wd, rescale
 *   kind 2 sgd: s1 = momentum or null, p = lr, momentum, wd, rescale */
napi_value js_optim(napi_env env, napi_callback_info info) {
  napi_value argv[14];
  if (!get_args(env, info, 14, argv)) return NULL;
  int32_t kind = -1;
  if (napi_get_value_int32(env, argv[0], &kind) != napi_ok) kind = -1;
  view_t w, g, s1 = {0}, s2 = {0}, rows = {0}, lrRows = {0};
  if (!get_view(env, argv[1], &w, "weights") || !get_view(env, argv[2], &g, "grad")) return NULL;
  napi_valuetype t;
  napi_typeof(env, argv[3], &t);
  int has1 = t != napi_null;
  if (has1 && !get_view(env, argv[3], &s1, "state")) return NULL;
  napi_typeof(env, argv[4], &t);
  int has2 = t != napi_null;
  if (has2 && !get_view(env, argv[4], &s2, "state")) return NULL;
  napi_typeof(env, argv[5], &t);
  int hasRows = t != napi_null; /* an empty Int32Array may have a NULL data pointer: test the argument */
  if (hasRows && !get_view(env, argv[5], &rows, "rows")) return NULL;
  uint32_t rowSize = 0;
  napi_typeof(env, argv[7], &t);
  int hasLr = t != napi_null;
  if (hasLr && !get_view(env, argv[7], &lrRows, "lrRows")) return NULL;
  double p[6];
  const char *bad = NULL;
  for (int i = 0; i < 6; i++)
    if (napi_get_value_double(env, argv[8 + i], &p[i]) != napi_ok) bad = "optimizer parameters must be numbers";
  if (napi_get_value_uint32(env, argv[6], &rowSize) != napi_ok) bad = "rowSize must be a number";
  int need1 = kind == 0 || kind == 1, need2 = kind == 0;
  if (bad) { /* a parameter was not a number */
  } else if (kind < 0 || kind > 2) bad = "kind must be 0 (adam), 1 (adagrad) or 2 (sgd)";
  else if (w.type != napi_float32_array && w.type != napi_float64_array) bad = "weights must be a Float32Array or Float64Array";
  else if (g.type != w.type || (has1 && (s1.type != w.type || s1.length != w.length)) || (has2 && (s2.type != w.type || s2.length != w.length)))
    bad = "grad and state must have the weights' type (state also its length)";
  else if ((need1 && !has1) || (need2 && !has2)) bad = "missing optimizer state";
  else if (hasRows && rows.type != napi_int32_array) bad = "rows must be an Int32Array";
  else if (hasLr && (lrRows.type != napi_float64_array || !hasRows || lrRows.length != rows.length)) bad = "lrRows must be a Float64Array, one per row";
  else if (hasRows ? (rowSize == 0 || g.length != rows.length * (size_t)rowSize) : g.length != w.length) bad = "grad must hold one run per row (or match the weights)";
  if (!bad && hasRows && rows.length) {
    const int32_t *rr = (const int32_t *)rows.data;
    size_t nr = w.length / rowSize;
    for (size_t i = 0; i < rows.length && !bad; i++)
      if (rr[i] < 0 || (size_t)rr[i] >= nr) bad = "row id outside the weights";
  }
  if (bad) {
    napi_throw_range_error(env, "ERR_INVALID_ARG", bad);
    return NULL;
  }
  if ((hasRows && rows.length == 0) || w.length == 0) return NULL; /* nothing to do */
  const int32_t *rr = hasRows ? (const int32_t *)rows.data : NULL;
  const double *lr = hasLr ? (const double *)lrRows.data : NULL;
  size_t nr = rows.length, n = w.length;
  if (w.type == napi_float32_array) {
    if (kind == 0) adam_f32(w.data, g.data, s1.data, s2.data, rr, nr, rowSize, n, lr, p[0], p[1], p[2], p[3], p[4], p[5]);
    else if (kind == 1) adagrad_f32(w.data, g.data, s1.data, rr, nr, rowSize, n, p[0], p[1], p[2], p[3]);
    else sgd_f32(w.data, g.data, s1.data, rr, nr, rowSize, n, p[0], p[1], p[2], p[3]);
  } else {
    if (kind == 0) adam_f64(w.data, g.data, s1.data, s2.data, rr, nr, rowSize, n, lr, p[0], p[1], p[2], p[3], p[4], p[5]);
    else if (kind == 1) adagrad_f64(w.data, g.data, s1.data, rr, nr, rowSize, n, p[0], p[1], p[2], p[3]);
    else sgd_f64(w.data, g.data, s1.data, rr, nr, rowSize, n, p[0], p[1], p[2], p[3]);
  }
  return NULL;
}
