/* shoal kernels (kernels.h): the parameter server's row moves (gather, take, merge, scatter) and nonZeroRows. */
#include <stdint.h>
#include <string.h>
#include "kernels.h"
#include "shoal_reduce.h"

/* rows(op, dst, src, rows, rowSize, touched, fresh) -> count
 *   op 0 gather: dst[i] = src[rows[i]] (row i of dst packed)
 *   op 1 take: the same, then src[rows[i]] = 0
 *   op 2 merge: src row i into dst[rows[i]]: copied the first time a round touches it (touched[r] = 1, r appended
 *        to fresh), added after that; returns how many rows were fresh.
 *   op 3 scatter: dst[rows[i]] = src row i (src packed). */
napi_value js_rows(napi_env env, napi_callback_info info) {
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

napi_value js_nonzero_rows(napi_env env, napi_callback_info info) {
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
