/*
 * shoal reduction kernels: element-wise reductions used by the ring collectives, in place on the caller's typed
 * arrays (no copies: the JS side passes views, the kernel writes `dst`), and the parameter server's updates.
 *
 *   reduce(op, dst, src)        dst[i] = op(dst[i], src[i]); op 0 sum, 1 min, 2 max; f32, f64 or i32 (same type)
 *   reduceF16(op, dst, src)     dst: Float32Array, src: Uint16Array of IEEE half floats (fp16 wire format)
 *   f32ToF16(dst, src)          round-to-nearest-even, overflow to +-Inf, NaN kept
 *   f16ToF32(dst, src)
 *   scale(dst, factor)          f32 or f64: dst[i] *= factor
 *   firstNonFinite(arr)         index of the first NaN/Inf in a f32/f64 array, or -1
 *   sumUpdate, optim            the parameter server's update of a linear rule, its optimizers (update.c)
 *   rows, nonZeroRows           the parameter server's row moves (rows.c)
 *   isa()                       "avx2+f16c" or "generic": which code path runs on this CPU
 *
 * Vectorisation: the loops are plain C compiled at -O3 twice through GCC target_clones (AVX2 and baseline
 * SSE2); the loader picks the clone at run time from CPUID. The half-float conversions use F16C when the CPU
 * has it (checked at run time) and a bit-exact scalar path otherwise.
 * Preconditions (checked, TypeError otherwise): dst and src have the same element count.
 *
 * Files, one per concern, each with its loops and their N-API entry point (the loops keep internal linkage, so
 * they inline as they did in the single file): reduce.c (reduce, scale, firstNonFinite), half.c (half floats,
 * isa), update.c (sumUpdate, optim), rows.c (rows, nonZeroRows), addon.c (the module's exports). This header holds
 * the argument helpers they share.
 */
#ifndef SHOAL_KERNELS_H
#define SHOAL_KERNELS_H

#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* ---- N-API glue ---- */
typedef struct {
  napi_typedarray_type type;
  void *data;
  size_t length;
} view_t;

static inline int get_view(napi_env env, napi_value v, view_t *out, const char *name) {
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

static inline int get_args(napi_env env, napi_callback_info info, size_t want, napi_value *argv) {
  size_t argc = want;
  napi_get_cb_info(env, info, &argc, argv, NULL, NULL);
  if (argc < want) {
    napi_throw_type_error(env, "ERR_INVALID_ARG", "missing arguments");
    return 0;
  }
  return 1;
}

/* The (op, dst, src) arguments of the reductions (reduce, reduceF16): 0 with a JS exception pending. */
static inline int get_op_dst_src(napi_env env, napi_callback_info info, int32_t *op, view_t *d, view_t *s) {
  napi_value argv[3];
  if (!get_args(env, info, 3, argv)) return 0;
  napi_get_value_int32(env, argv[0], op);
  return get_view(env, argv[1], d, "dst") && get_view(env, argv[2], s, "src");
}

/* The entry points (each file's js_* functions). */
napi_value js_reduce(napi_env env, napi_callback_info info);
napi_value js_scale(napi_env env, napi_callback_info info);
napi_value js_first_nonfinite(napi_env env, napi_callback_info info);
napi_value js_reduce_f16(napi_env env, napi_callback_info info);
napi_value js_f32_to_f16(napi_env env, napi_callback_info info);
napi_value js_f16_to_f32(napi_env env, napi_callback_info info);
napi_value js_isa(napi_env env, napi_callback_info info);
napi_value js_sum_update(napi_env env, napi_callback_info info);
napi_value js_optim(napi_env env, napi_callback_info info);
napi_value js_rows(napi_env env, napi_callback_info info);
napi_value js_nonzero_rows(napi_env env, napi_callback_info info);

/* half.c: pick the half-float code path for this CPU (call once, before any kernel runs). */
void shoal_kernels_detect_isa(void);

#endif
