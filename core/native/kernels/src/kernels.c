/*
 * shoal reduction kernels: element-wise reductions used by the ring collectives, in place on the caller's typed
 * arrays (no copies: the JS side passes views, the kernel writes `dst`).
 *
 *   reduce(op, dst, src)        dst[i] = op(dst[i], src[i]); op 0 sum, 1 min, 2 max; f32, f64 or i32 (same type)
 *   reduceF16(op, dst, src)     dst: Float32Array, src: Uint16Array of IEEE half floats (fp16 wire format)
 *   f32ToF16(dst, src)          round-to-nearest-even, overflow to +-Inf, NaN kept
 *   f16ToF32(dst, src)
 *   scale(dst, factor)          f32 or f64: dst[i] *= factor
 *   firstNonFinite(arr)         index of the first NaN/Inf in a f32/f64 array, or -1
 *   isa()                       "avx2+f16c" or "generic": which code path runs on this CPU
 *
 * Vectorisation: the loops are plain C compiled at -O3 twice through GCC target_clones (AVX2 and baseline
 * SSE2); the loader picks the clone at run time from CPUID. The half-float conversions use F16C when the CPU
 * has it (checked at run time) and a bit-exact scalar path otherwise.
 * Preconditions (checked, TypeError otherwise): dst and src have the same element count.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <math.h>
#include "shoal_reduce.h"
#ifdef SHOAL_X86
#include <immintrin.h>
#endif

/* ---- half floats ---- */
static inline float h2f_scalar(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t man = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (man == 0) bits = sign;
    else { /* subnormal */
      float v = (float)man * (1.0f / 16777216.0f); /* man * 2^-24 */
      memcpy(&bits, &v, 4);
      bits |= sign;
    }
  } else if (exp == 31) bits = sign | 0x7f800000 | (man << 13);
  else bits = sign | ((exp + 112) << 23) | (man << 13);
  float f;
  memcpy(&f, &bits, 4);
  return f;
}
static inline uint16_t f2h_scalar(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint32_t sign = (x >> 16) & 0x8000;
  uint32_t ax = x & 0x7fffffff;
  if (ax >= 0x7f800000) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 | ((ax >> 13) & 0x3ff) : 0));
  if (ax >= 0x477ff000) return (uint16_t)(sign | 0x7c00); /* rounds to >= 65520: Inf */
  if (ax < 0x38800000) { /* subnormal half or zero: value * 2^24, round to nearest even */
    float a;
    memcpy(&a, &ax, 4);
    float m = a * 16777216.0f;
    return (uint16_t)(sign | (uint16_t)lrintf(m));
  }
  uint32_t r = ax + 0xc8000fff + ((ax >> 13) & 1); /* rebias exponent (-112<<23) and round to nearest even */
  return (uint16_t)(sign | (r >> 13));
}

#ifdef SHOAL_X86
__attribute__((target("avx2,f16c"))) static void f32_to_f16_hw(uint16_t *d, const float *s, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) d[i] = f2h_scalar(s[i]);
}
__attribute__((target("avx2,f16c"))) static void f16_to_f32_hw(float *d, const uint16_t *s, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
  for (; i < n; i++) d[i] = h2f_scalar(s[i]);
}
__attribute__((target("avx2,f16c"))) static void reduce_f16_hw(int op, float *d, const uint16_t *s, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 a = _mm256_loadu_ps(d + i);
    __m256 b = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i)));
    __m256 r = op == 0 ? _mm256_add_ps(a, b) : op == 1 ? _mm256_min_ps(b, a) : _mm256_max_ps(b, a);
    _mm256_storeu_ps(d + i, r);
  }
  for (; i < n; i++) {
    float b = h2f_scalar(s[i]);
    d[i] = op == 0 ? d[i] + b : op == 1 ? (b < d[i] ? b : d[i]) : (b > d[i] ? b : d[i]);
  }
}
#endif

static int has_f16c = 0;

static void f32_to_f16(uint16_t *d, const float *s, size_t n) {
#ifdef SHOAL_X86
  if (has_f16c) { f32_to_f16_hw(d, s, n); return; }
#endif
  for (size_t i = 0; i < n; i++) d[i] = f2h_scalar(s[i]);
}
static void f16_to_f32(float *d, const uint16_t *s, size_t n) {
#ifdef SHOAL_X86
  if (has_f16c) { f16_to_f32_hw(d, s, n); return; }
#endif
  for (size_t i = 0; i < n; i++) d[i] = h2f_scalar(s[i]);
}
static void reduce_f16(int op, float *d, const uint16_t *s, size_t n) {
#ifdef SHOAL_X86
  if (has_f16c) { reduce_f16_hw(op, d, s, n); return; }
#endif
  for (size_t i = 0; i < n; i++) {
    float b = h2f_scalar(s[i]);
    d[i] = op == 0 ? d[i] + b : op == 1 ? (b < d[i] ? b : d[i]) : (b > d[i] ? b : d[i]);
  }
}

/* ---- N-API glue ---- */
typedef struct {
  napi_typedarray_type type;
  void *data;
  size_t length;
} view_t;

static int get_view(napi_env env, napi_value v, view_t *out, const char *name) {
  bool is;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) {
    char msg[96];
    snprintf(msg, sizeof msg, "%s must be a typed array", name);
    napi_throw_type_error(env, "ERR_INVALID_ARG", msg);
    return 0;
  }
  napi_value ab;
  size_t off;
  if (napi_get_typedarray_info(env, v, &out->type, &out->length, &out->data, &ab, &off) != napi_ok) {
    napi_throw_error(env, NULL, "napi_get_typedarray_info failed");
    return 0;
  }
  return 1;
}

static int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "missing arguments");
    return 0;
  }
  return 1;
}

static napi_value js_reduce(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  int32_t op;
  napi_get_value_int32(env, argv[0], &op);
  view_t d, s;
  if (!get_view(env, argv[1], &d, "dst") || !get_view(env, argv[2], &s, "src")) return NULL;
  if (d.type != s.type || d.length != s.length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "dst and src must have the same type and length");
    return NULL;
  }
  if (op < 0 || op > 2) {
    napi_throw_range_error(env, "ERR_INVALID_ARG", "op must be 0 (sum), 1 (min) or 2 (max)");
    return NULL;
  }
  switch (d.type) {
    case napi_float32_array:
      (op == 0 ? shoal_f32_sum : op == 1 ? shoal_f32_min : shoal_f32_max)((float *)d.data, (const float *)s.data, d.length);
      break;
    case napi_float64_array:
      (op == 0 ? shoal_f64_sum : op == 1 ? shoal_f64_min : shoal_f64_max)((double *)d.data, (const double *)s.data, d.length);
      break;
    case napi_int32_array:
      if (op == 0) shoal_u32_sum((uint32_t *)d.data, (const uint32_t *)s.data, d.length);
      else (op == 1 ? shoal_i32_min : shoal_i32_max)((int32_t *)d.data, (const int32_t *)s.data, d.length);
      break;
    default:
      napi_throw_type_error(env, "ERR_INVALID_ARG", "dtype must be Float32Array, Float64Array or Int32Array");
      return NULL;
  }
  return NULL;
}

static napi_value js_reduce_f16(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  int32_t op;
  napi_get_value_int32(env, argv[0], &op);
  view_t d, s;
  if (!get_view(env, argv[1], &d, "dst") || !get_view(env, argv[2], &s, "src")) return NULL;
  if (d.type != napi_float32_array || s.type != napi_uint16_array || d.length != s.length || op < 0 || op > 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "reduceF16(op, Float32Array, Uint16Array) with equal lengths");
    return NULL;
  }
  reduce_f16(op, (float *)d.data, (const uint16_t *)s.data, d.length);
  return NULL;
}

static napi_value js_f32_to_f16(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  view_t d, s;
  if (!get_view(env, argv[0], &d, "dst") || !get_view(env, argv[1], &s, "src")) return NULL;
  if (d.type != napi_uint16_array || s.type != napi_float32_array || d.length != s.length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "f32ToF16(Uint16Array, Float32Array) with equal lengths");
    return NULL;
  }
  f32_to_f16((uint16_t *)d.data, (const float *)s.data, d.length);
  return NULL;
}

static napi_value js_f16_to_f32(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  view_t d, s;
  if (!get_view(env, argv[0], &d, "dst") || !get_view(env, argv[1], &s, "src")) return NULL;
  if (d.type != napi_float32_array || s.type != napi_uint16_array || d.length != s.length) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "f16ToF32(Float32Array, Uint16Array) with equal lengths");
    return NULL;
  }
  f16_to_f32((float *)d.data, (const uint16_t *)s.data, d.length);
  return NULL;
}

static napi_value js_scale(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, 2, argv)) return NULL;
  view_t d;
  if (!get_view(env, argv[0], &d, "dst")) return NULL;
  double f;
  napi_get_value_double(env, argv[1], &f);
  if (d.type == napi_float32_array) shoal_scale_f32((float *)d.data, (float)f, d.length);
  else if (d.type == napi_float64_array) shoal_scale_f64((double *)d.data, f, d.length);
  else {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "scale(dst) needs a Float32Array or Float64Array");
    return NULL;
  }
  return NULL;
}

/* NaN/Inf <=> all exponent bits set. Tested on the bits with integer ops, which vectorise (a float any() written
 * as acc += a[i] * 0 does not: without -ffast-math the sum is one serial dependency chain, ~1 ns/element). */
#define DEF_NONFINITE(T, U, EXP, NAME)                                                       \
  CLONES static int64_t nonfinite_##NAME(const T *a, size_t n) {                            \
    for (size_t b = 0; b < n; b += 4096) {                                                   \
      size_t e = b + 4096 < n ? b + 4096 : n;                                                \
      U bad = 0;                                                                             \
      for (size_t i = b; i < e; i++) {                                                       \
        U u;                                                                                 \
        memcpy(&u, &a[i], sizeof u);                                                         \
        bad |= (U)((u & EXP) == EXP);                                                        \
      }                                                                                      \
      if (bad)                                                                               \
        for (size_t i = b; i < e; i++) if (!isfinite(a[i])) return (int64_t)i;               \
    }                                                                                        \
    return -1;                                                                               \
  }
DEF_NONFINITE(float, uint32_t, 0x7f800000u, f32)
DEF_NONFINITE(double, uint64_t, 0x7ff0000000000000ull, f64)

static napi_value js_first_nonfinite(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, 1, argv)) return NULL;
  view_t d;
  if (!get_view(env, argv[0], &d, "arr")) return NULL;
  int64_t r;
  if (d.type == napi_float32_array) r = nonfinite_f32((const float *)d.data, d.length);
  else if (d.type == napi_float64_array) r = nonfinite_f64((const double *)d.data, d.length);
  else r = -1; /* integers are always finite */
  napi_value out;
  napi_create_int64(env, r, &out);
  return out;
}

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
static napi_value js_sum_update(napi_env env, napi_callback_info info) {
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

/* ---- the parameter server's optimizers and row moves ----
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
static napi_value js_optim(napi_env env, napi_callback_info info) {
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

/* rows(op, dst, src, rows, rowSize, touched, fresh) -> count
 *   op 0 gather: dst[i] = src[rows[i]] (row i of dst packed)
 *   op 1 take: the same, then src[rows[i]] = 0
 *   op 2 merge: src row i into dst[rows[i]]: copied the first time a round touches it (touched[r] = 1, r appended
 *        to fresh), added after that; returns how many rows were fresh.
 *   op 3 scatter: dst[rows[i]] = src row i (src packed). */
static napi_value js_rows(napi_env env, napi_callback_info info) {
  napi_value argv[7];
  if (!get_args(env, info, 5, argv)) return NULL;
  int32_t op = -1;
  if (napi_get_value_int32(env, argv[0], &op) != napi_ok) op = -1;
  view_t d, s, rows, touched = {0}, fresh = {0};
  if (!get_view(env, argv[1], &d, "dst") || !get_view(env, argv[2], &s, "src") || !get_view(env, argv[3], &rows, "rows")) return NULL;
  uint32_t rs = 0;
  if (napi_get_value_uint32(env, argv[4], &rs) != napi_ok) rs = 0;
  if (op == 2) {
    size_t argc = 7;
    napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
    if (argc < 7 || !get_view(env, argv[5], &touched, "touched") || !get_view(env, argv[6], &fresh, "fresh")) return NULL;
  }
  const char *bad = NULL;
  size_t n = rows.length;
  int packedSrc = op >= 2; /* merge and scatter read packed rows and write the table */
  if (op < 0 || op > 3) bad = "op must be 0 (gather), 1 (take), 2 (merge) or 3 (scatter)";
  else if (d.type != s.type || (d.type != napi_float32_array && d.type != napi_float64_array)) bad = "dst and src must be float arrays of one type";
  else if (rows.type != napi_int32_array || rs == 0) bad = "rows must be an Int32Array and rowSize positive";
  else if (packedSrc ? s.length != n * (size_t)rs : d.length != n * (size_t)rs) bad = "the packed side must hold rows.length * rowSize values";
  else if (op == 2 && (touched.type != napi_uint8_array || touched.length * (size_t)rs != d.length || fresh.type != napi_int32_array || fresh.length < n))
    bad = "merge needs touched (Uint8Array, one per row of dst) and fresh (Int32Array, >= rows.length)";
  const int32_t *rr = (const int32_t *)rows.data;
  if (!bad) {
    size_t tableRows = (packedSrc ? d.length : s.length) / rs;
    for (size_t i = 0; i < n && !bad; i++)
      if (rr[i] < 0 || (size_t)rr[i] >= tableRows) bad = "row id outside the table";
  }
  if (bad) {
    napi_throw_range_error(env, "ERR_INVALID_ARG", bad);
    return NULL;
  }
  size_t es = d.type == napi_float32_array ? 4 : 8, rb = rs * es, count = 0;
  uint8_t *db = (uint8_t *)d.data, *sb = (uint8_t *)s.data;
  if (op == 3) {
    for (size_t i = 0; i < n; i++) memcpy(db + (size_t)rr[i] * rb, sb + i * rb, rb);
  } else if (op != 2) {
    for (size_t i = 0; i < n; i++) {
      memcpy(db + i * rb, sb + (size_t)rr[i] * rb, rb);
      if (op == 1) memset(sb + (size_t)rr[i] * rb, 0, rb);
    }
  } else {
    uint8_t *tu = (uint8_t *)touched.data;
    int32_t *fr = (int32_t *)fresh.data;
    for (size_t i = 0; i < n; i++) {
      size_t r = (size_t)rr[i];
      if (!tu[r]) {
        tu[r] = 1;
        fr[count++] = (int32_t)r;
        memcpy(db + r * rb, sb + i * rb, rb);
      } else if (es == 4) {
        shoal_f32_sum((float *)(db + r * rb), (const float *)(sb + i * rb), rs);
      } else {
        shoal_f64_sum((double *)(db + r * rb), (const double *)(sb + i * rb), rs);
      }
    }
  }
  napi_value out;
  napi_create_uint32(env, (uint32_t)count, &out);
  return out;
}

/* nonZeroRows(a, rowSize, out) -> count: the rows of a (rowSize values each) holding any value != 0 (NaN counts,
 * -0 does not), in order, into out. */
#define DEF_NONZERO_ROWS(T, NAME)                                                                   \
  static size_t nonzero_rows_##NAME(const T *a, size_t rows, size_t rs, int32_t *out) {              \
    size_t count = 0;                                                                               \
    for (size_t r = 0; r < rows; r++) {                                                             \
      const T *x = a + r * rs;                                                                      \
      for (size_t j = 0; j < rs; j++)                                                               \
        if (x[j] != 0) {                                                                            \
          out[count++] = (int32_t)r;                                                                \
          break;                                                                                    \
        }                                                                                           \
    }                                                                                               \
    return count;                                                                                   \
  }
DEF_NONZERO_ROWS(float, f32)
DEF_NONZERO_ROWS(double, f64)

static napi_value js_nonzero_rows(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return NULL;
  view_t a, out;
  uint32_t rs = 0;
  if (!get_view(env, argv[0], &a, "a") || !get_view(env, argv[2], &out, "out")) return NULL;
  if (napi_get_value_uint32(env, argv[1], &rs) != napi_ok) rs = 0;
  if ((a.type != napi_float32_array && a.type != napi_float64_array) || rs == 0 || a.length % rs != 0 || out.type != napi_int32_array || out.length < a.length / rs) {
    napi_throw_range_error(env, "ERR_INVALID_ARG", "nonZeroRows(a: float array of whole rows, rowSize > 0, out: Int32Array of >= rows)");
    return NULL;
  }
  size_t rows = a.length / rs, count = a.length == 0 ? 0
      : a.type == napi_float32_array ? nonzero_rows_f32((const float *)a.data, rows, rs, (int32_t *)out.data)
                                     : nonzero_rows_f64((const double *)a.data, rows, rs, (int32_t *)out.data);
  napi_value r;
  napi_create_uint32(env, (uint32_t)count, &r);
  return r;
}

static napi_value js_isa(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_string_utf8(env, has_f16c ? "avx2+f16c" : "generic", NAPI_AUTO_LENGTH, &out);
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
#ifdef SHOAL_X86
  __builtin_cpu_init();
  has_f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif
  napi_property_descriptor props[] = {
    {"reduce", NULL, js_reduce, NULL, NULL, NULL, napi_default, NULL},
    {"reduceF16", NULL, js_reduce_f16, NULL, NULL, NULL, napi_default, NULL},
    {"f32ToF16", NULL, js_f32_to_f16, NULL, NULL, NULL, napi_default, NULL},
    {"f16ToF32", NULL, js_f16_to_f32, NULL, NULL, NULL, napi_default, NULL},
    {"scale", NULL, js_scale, NULL, NULL, NULL, napi_default, NULL},
    {"firstNonFinite", NULL, js_first_nonfinite, NULL, NULL, NULL, napi_default, NULL},
    {"sumUpdate", NULL, js_sum_update, NULL, NULL, NULL, napi_default, NULL},
    {"optim", NULL, js_optim, NULL, NULL, NULL, napi_default, NULL},
    {"rows", NULL, js_rows, NULL, NULL, NULL, napi_default, NULL},
    {"nonZeroRows", NULL, js_nonzero_rows, NULL, NULL, NULL, napi_default, NULL},
    {"isa", NULL, js_isa, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
