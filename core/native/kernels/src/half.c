/* shoal kernels (kernels.h): IEEE half floats, the fp16 wire format. A bit-exact scalar path, and F16C when the
 * CPU has it (detected once by shoal_kernels_detect_isa). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"
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

void shoal_kernels_detect_isa(void) {
#ifdef SHOAL_X86
  __builtin_cpu_init();
  has_f16c = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c");
#endif
}

napi_value js_reduce_f16(napi_env env, napi_callback_info info) {
  int32_t op;
  view_t d, s;
  if (!get_op_dst_src(env, info, &op, &d, &s)) return NULL;
  if (d.type != napi_float32_array || s.type != napi_uint16_array || d.length != s.length || op < 0 || op > 2) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "reduceF16(op, Float32Array, Uint16Array) with equal lengths");
    return NULL;
  }
  reduce_f16(op, (float *)d.data, (const uint16_t *)s.data, d.length);
  return NULL;
}

napi_value js_f32_to_f16(napi_env env, napi_callback_info info) {
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

napi_value js_f16_to_f32(napi_env env, napi_callback_info info) {
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

napi_value js_isa(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value out;
  napi_create_string_utf8(env, has_f16c ? "avx2+f16c" : "generic", NAPI_AUTO_LENGTH, &out);
  return out;
}
