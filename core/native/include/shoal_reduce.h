/*
 * Element-wise reduction loops shared by the native addons (kernels: the JS-facing reduction kernels; shmcoll: the
 * same-host shared-segment collective). Plain loops vectorised by -O3; on x86 with GCC each is compiled twice
 * through target_clones (AVX2 and baseline) and the loader picks the clone from CPUID. Valid C11 and C++17.
 *
 *   shoal_<t>_sum / _min / _max (d, s, n)      d[i] = op(d[i], s[i])
 *   shoal_<t>_sum3 / _min3 / _max3 (d, a, b, n) d[i] = op(a[i], b[i])
 *   shoal_scale_<t> (d, f, n)                  d[i] *= f
 *
 * <t>: f32, f64, u32 (int32 sums wrap modulo 2^32 like JS `|0`, without signed-overflow UB) for sums; f32, f64,
 * i32 for min/max. Preconditions: the arrays do not overlap (restrict) and hold n elements.
 */
#ifndef SHOAL_REDUCE_H
#define SHOAL_REDUCE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define SHOAL_X86 1
#endif

#if defined(SHOAL_X86) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif
#if defined(__GNUC__)
#define SHOAL_MAYBE_UNUSED __attribute__((unused))
#else
#define SHOAL_MAYBE_UNUSED
#endif
/* Each addon uses some of these; the rest are dropped without a warning. */
#define SHOAL_FN CLONES SHOAL_MAYBE_UNUSED static void

#define SHOAL_DEF_SUM(T, NAME)                                                                        \
  SHOAL_FN shoal_##NAME##_sum(T *__restrict d, const T *__restrict s, size_t n) {          \
    for (size_t i = 0; i < n; i++) d[i] += s[i];                                                      \
  }                                                                                                   \
  SHOAL_FN shoal_##NAME##_sum3(T *__restrict d, const T *__restrict a, const T *__restrict b, size_t n) { \
    for (size_t i = 0; i < n; i++) d[i] = a[i] + b[i];                                                \
  }
#define SHOAL_DEF_MINMAX(T, NAME)                                                                     \
  SHOAL_FN shoal_##NAME##_min(T *__restrict d, const T *__restrict s, size_t n) {          \
    for (size_t i = 0; i < n; i++) d[i] = s[i] < d[i] ? s[i] : d[i];                                  \
  }                                                                                                   \
  SHOAL_FN shoal_##NAME##_max(T *__restrict d, const T *__restrict s, size_t n) {          \
    for (size_t i = 0; i < n; i++) d[i] = s[i] > d[i] ? s[i] : d[i];                                  \
  }                                                                                                   \
  SHOAL_FN shoal_##NAME##_min3(T *__restrict d, const T *__restrict a, const T *__restrict b, size_t n) { \
    for (size_t i = 0; i < n; i++) d[i] = b[i] < a[i] ? b[i] : a[i];                                  \
  }                                                                                                   \
  SHOAL_FN shoal_##NAME##_max3(T *__restrict d, const T *__restrict a, const T *__restrict b, size_t n) { \
    for (size_t i = 0; i < n; i++) d[i] = b[i] > a[i] ? b[i] : a[i];                                  \
  }
#define SHOAL_DEF_SCALE(T, NAME)                                                                      \
  SHOAL_FN shoal_scale_##NAME(T *__restrict d, T f, size_t n) {                            \
    for (size_t i = 0; i < n; i++) d[i] *= f;                                                         \
  }

SHOAL_DEF_SUM(float, f32)
SHOAL_DEF_SUM(double, f64)
SHOAL_DEF_SUM(uint32_t, u32)
SHOAL_DEF_MINMAX(float, f32)
SHOAL_DEF_MINMAX(double, f64)
SHOAL_DEF_MINMAX(int32_t, i32)
SHOAL_DEF_SCALE(float, f32)
SHOAL_DEF_SCALE(double, f64)

#endif
