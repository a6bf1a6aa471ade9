// AVX2 + FMA + F16C dense kernels. Compiled with -mavx2 -mfma -mf16c; only called when the CPU has them.
#include <immintrin.h>

#include <cstring>

#include "kernels/dense.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

template <WType T>
inline __m256 load8(const void* p, int64_t i) {
  if constexpr (T == WType::kF32) {
    return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else if constexpr (T == WType::kF16) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)));
  } else {
    __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <WType T>
inline float load1(const void* p, int64_t i) {
  if constexpr (T == WType::kF32) return static_cast<const float*>(p)[i];
  else if constexpr (T == WType::kF16) return fp16_to_f32(static_cast<const uint16_t*>(p)[i]);
  else return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// One x row: four accumulators over K hide the FMA latency.
template <WType T>
float dot_row(const void* w, int64_t off, const float* x, int K) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int k = 0;
  for (; k + 32 <= K; k += 32) {
    a0 = _mm256_fmadd_ps(load8<T>(w, off + k), _mm256_loadu_ps(x + k), a0);
    a1 = _mm256_fmadd_ps(load8<T>(w, off + k + 8), _mm256_loadu_ps(x + k + 8), a1);
    a2 = _mm256_fmadd_ps(load8<T>(w, off + k + 16), _mm256_loadu_ps(x + k + 16), a2);
    a3 = _mm256_fmadd_ps(load8<T>(w, off + k + 24), _mm256_loadu_ps(x + k + 24), a3);
  }
  for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(load8<T>(w, off + k), _mm256_loadu_ps(x + k), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; k < K; ++k) s += load1<T>(w, off + k) * x[k];
  return s;
}

// Four x rows share each weight load.
template <WType T>
void dot_row4(const void* w, int64_t off, const float* x, int64_t ldx, int K, float* out) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  const float *x0 = x, *x1 = x + ldx, *x2 = x + 2 * ldx, *x3 = x + 3 * ldx;
  int k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 wv = load8<T>(w, off + k);
    a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x0 + k), a0);
    a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x1 + k), a1);
    a2 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x2 + k), a2);
    a3 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x3 + k), a3);
  }
  float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  for (; k < K; ++k) {
    float wk = load1<T>(w, off + k);
    s0 += wk * x0[k];
    s1 += wk * x1[k];
    s2 += wk * x2[k];
    s3 += wk * x3[k];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

template <WType T>
void gemm_t(const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy, int M, int K, int n0,
            int n1) {
  int m = 0;
  for (; m + 4 <= M; m += 4) {
    for (int n = n0; n < n1; ++n) {
      float r[4];
      dot_row4<T>(w, n * ldw, x + m * ldx, ldx, K, r);
      for (int i = 0; i < 4; ++i) y[(m + i) * ldy + n] = r[i];
    }
  }
  for (; m < M; ++m)
    for (int n = n0; n < n1; ++n) y[m * ldy + n] = dot_row<T>(w, n * ldw, x + m * ldx, K);
}

void gemm(WType wt, const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy, int M, int K,
          int n0, int n1) {
  switch (wt) {
    case WType::kF32: return gemm_t<WType::kF32>(w, ldw, x, ldx, y, ldy, M, K, n0, n1);
    case WType::kF16: return gemm_t<WType::kF16>(w, ldw, x, ldx, y, ldy, M, K, n0, n1);
    case WType::kBF16: return gemm_t<WType::kBF16>(w, ldw, x, ldx, y, ldy, M, K, n0, n1);
  }
}

template <WType T>
void gemv_t_t(const void* v, int64_t ldv, const float* p, int n, int K, float* y) {
  int k = 0;
  // 32 outputs at a time stay in registers across all n rows.
  for (; k + 32 <= K; k += 32) {
    __m256 a0 = _mm256_loadu_ps(y + k), a1 = _mm256_loadu_ps(y + k + 8), a2 = _mm256_loadu_ps(y + k + 16),
           a3 = _mm256_loadu_ps(y + k + 24);
    for (int j = 0; j < n; ++j) {
      __m256 pj = _mm256_set1_ps(p[j]);
      int64_t off = j * ldv + k;
      a0 = _mm256_fmadd_ps(pj, load8<T>(v, off), a0);
      a1 = _mm256_fmadd_ps(pj, load8<T>(v, off + 8), a1);
      a2 = _mm256_fmadd_ps(pj, load8<T>(v, off + 16), a2);
      a3 = _mm256_fmadd_ps(pj, load8<T>(v, off + 24), a3);
    }
    _mm256_storeu_ps(y + k, a0);
    _mm256_storeu_ps(y + k + 8, a1);
    _mm256_storeu_ps(y + k + 16, a2);
    _mm256_storeu_ps(y + k + 24, a3);
  }
  for (; k + 8 <= K; k += 8) {
    __m256 a0 = _mm256_loadu_ps(y + k);
    for (int j = 0; j < n; ++j) a0 = _mm256_fmadd_ps(_mm256_set1_ps(p[j]), load8<T>(v, j * ldv + k), a0);
    _mm256_storeu_ps(y + k, a0);
  }
  for (; k < K; ++k) {
    float s = y[k];
    for (int j = 0; j < n; ++j) s += p[j] * load1<T>(v, j * ldv + k);
    y[k] = s;
  }
}

void gemv_t(WType wt, const void* v, int64_t ldv, const float* p, int n, int K, float* y) {
  switch (wt) {
    case WType::kF32: return gemv_t_t<WType::kF32>(v, ldv, p, n, K, y);
    case WType::kF16: return gemv_t_t<WType::kF16>(v, ldv, p, n, K, y);
    case WType::kBF16: return gemv_t_t<WType::kBF16>(v, ldv, p, n, K, y);
  }
}

template <WType T>
void to_f32_t(const void* src, float* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(dst + i, load8<T>(src, i));
  for (; i < n; ++i) dst[i] = load1<T>(src, i);
}

void to_f32(WType wt, const void* src, float* dst, int64_t n) {
  switch (wt) {
    case WType::kF32: std::memcpy(dst, src, size_t(n) * 4); return;
    case WType::kF16: return to_f32_t<WType::kF16>(src, dst, n);
    case WType::kBF16: return to_f32_t<WType::kBF16>(src, dst, n);
  }
}

void from_f32(WType wt, const float* src, void* dst, int64_t n) {
  if (wt == WType::kF16) {
    auto* d = static_cast<uint16_t*>(dst);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(d + i),
                       _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; ++i) d[i] = f32_to_fp16(src[i]);
    return;
  }
  dense_kernels_scalar().from_f32(wt, src, dst, n);
}

}  // namespace

const DenseKernels& dense_kernels_avx2() {
  static const DenseKernels k{gemm, gemv_t, to_f32, from_f32};
  return k;
}

}  // namespace metharme::kernels
