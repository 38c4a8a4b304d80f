/* shoal kernels (kernels.h): the ring collectives' element-wise reductions, scale and the non-finite check. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "shoal_reduce.h"

napi_value js_reduce(napi_env env, napi_callback_info info) {
  int32_t op;
  view_t d, s;
  if (!get_op_dst_src(env, info, &op, &d, &s)) return NULL;
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

napi_value js_scale(napi_env env, napi_callback_info info) {
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

napi_value js_first_nonfinite(napi_env env, napi_callback_info info) {
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
