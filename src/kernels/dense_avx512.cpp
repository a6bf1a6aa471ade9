// AVX-512 dense kernels: the AVX2 designs (dense_avx2.cpp) at 16 floats per vector, with masked
// loads for the K tails instead of scalar loops, and a 4 x 4 register block for several rows
// (16 accumulators + 4 weights + 1 x of the 32 zmm registers). Conversions to fp16/bf16 and the
// SwiGLU gate are the AVX2 ones. Compiled with -mavx512{f,bw,vl,dq,vnni} (CMakeLists.txt); only
// called when the CPU has them (kernels/isa.cpp).
// GCC 12's own AVX-512 headers trip -W(maybe-)uninitialized (their _mm512_undefined_* helpers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "kernels/dense.h"

namespace metharme::kernels {

namespace {

inline __mmask16 tail_mask(int n) { return __mmask16((1u << n) - 1u); }  // n < 16

// 16 weights from element i, or the first `n` of them (the rest 0) with the masked form.
template <WType T>
inline __m512 load16(const void* p, int64_t i) {
  if constexpr (T == WType::kF32) {
    return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  } else {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
    if constexpr (T == WType::kF16)
      return _mm512_cvtph_ps(h);
    else
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}
template <WType T>
inline __m512 load16_masked(const void* p, int64_t i, __mmask16 m) {
  if constexpr (T == WType::kF32) {
    return _mm512_maskz_loadu_ps(m, static_cast<const float*>(p) + i);
  } else {
    const __m256i h = _mm256_maskz_loadu_epi16(m, static_cast<const uint16_t*>(p) + i);
    if constexpr (T == WType::kF16)
      return _mm512_cvtph_ps(h);
    else
      return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
}

// One x row: four accumulators over K hide the FMA latency.
template <WType T>
float dot_row(const void* w, int64_t off, const float* x, int K) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  int k = 0;
  for (; k + 64 <= K; k += 64) {
    a0 = _mm512_fmadd_ps(load16<T>(w, off + k), _mm512_loadu_ps(x + k), a0);
    a1 = _mm512_fmadd_ps(load16<T>(w, off + k + 16), _mm512_loadu_ps(x + k + 16), a1);
    a2 = _mm512_fmadd_ps(load16<T>(w, off + k + 32), _mm512_loadu_ps(x + k + 32), a2);
    a3 = _mm512_fmadd_ps(load16<T>(w, off + k + 48), _mm512_loadu_ps(x + k + 48), a3);
  }
  for (; k + 16 <= K; k += 16) a0 = _mm512_fmadd_ps(load16<T>(w, off + k), _mm512_loadu_ps(x + k), a0);
  if (k < K) {
    const __mmask16 m = tail_mask(K - k);
    a1 = _mm512_fmadd_ps(load16_masked<T>(w, off + k, m), _mm512_maskz_loadu_ps(m, x + k), a1);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}

// MR x rows times NR weight rows, as dense_avx2.cpp's dot_block (prefetching the next NR
// weight rows when kPrefetch), with the K tail as one masked step.
template <WType T, int MR, int NR, bool kPrefetch>
void dot_block(const void* w, int64_t off, int64_t ldw, const float* x, int64_t ldx, int K, float* y, int64_t ldy) {
  constexpr int64_t es = T == WType::kF32 ? 4 : 2;
  __m512 acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_setzero_ps();
  int k = 0;
  for (; k + 16 <= K; k += 16) {
    if constexpr (kPrefetch) {
      if ((k & (64 / es - 1)) == 0)
        for (int j = 0; j < NR; ++j)
          _mm_prefetch(static_cast<const char*>(w) + (off + (NR + j) * ldw + k) * es, _MM_HINT_T0);
    }
    __m512 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load16<T>(w, off + j * ldw + k);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_loadu_ps(x + i * ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(wv[j], xv, acc[i][j]);
    }
  }
  if (k < K) {
    const __mmask16 m = tail_mask(K - k);
    __m512 wv[NR];
    for (int j = 0; j < NR; ++j) wv[j] = load16_masked<T>(w, off + j * ldw + k, m);
    for (int i = 0; i < MR; ++i) {
      const __m512 xv = _mm512_maskz_loadu_ps(m, x + i * ldx + k);
      for (int j = 0; j < NR; ++j) acc[i][j] = _mm512_fmadd_ps(wv[j], xv, acc[i][j]);
    }
  }
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) y[i * ldy + j] = _mm512_reduce_add_ps(acc[i][j]);
}

// All rows against NR weight rows: the first group of rows brings them into L1 (and prefetches
// the next NR), the others reuse them.
template <WType T, int NR>
void gemm_cols(const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy, int M, int K, int n) {
  const int64_t off = n * ldw;
  int m = 0;
  if (M >= 4) {
    dot_block<T, 4, NR, true>(w, off, ldw, x, ldx, K, y + n, ldy);
    for (m = 4; m + 4 <= M; m += 4) dot_block<T, 4, NR, false>(w, off, ldw, x + m * ldx, ldx, K, y + m * ldy + n, ldy);
  }
  switch (M - m) {
    case 3:
      dot_block<T, 3, NR, false>(w, off, ldw, x + m * ldx, ldx, K, y + m * ldy + n, ldy);
      break;
    case 2:
      dot_block<T, 2, NR, false>(w, off, ldw, x + m * ldx, ldx, K, y + m * ldy + n, ldy);
      break;
    case 1:
      dot_block<T, 1, NR, false>(w, off, ldw, x + m * ldx, ldx, K, y + m * ldy + n, ldy);
      break;
    default:
      break;
  }
}

template <WType T>
void gemm_t(const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy, int M, int K, int n0,
            int n1) {
  if (M == 1) {
    for (int n = n0; n < n1; ++n) y[n] = dot_row<T>(w, n * ldw, x, K);
    return;
  }
  int n = n0;
  for (; n + 4 <= n1; n += 4) gemm_cols<T, 4>(w, ldw, x, ldx, y, ldy, M, K, n);
  switch (n1 - n) {
    case 3:
      gemm_cols<T, 3>(w, ldw, x, ldx, y, ldy, M, K, n);
      break;
    case 2:
      gemm_cols<T, 2>(w, ldw, x, ldx, y, ldy, M, K, n);
      break;
    case 1:
      gemm_cols<T, 1>(w, ldw, x, ldx, y, ldy, M, K, n);
      break;
    default:
      break;
  }
}

void gemm(WType wt, const void* w, int64_t ldw, const float* x, int64_t ldx, float* y, int64_t ldy, int M, int K,
          int n0, int n1) {
  switch (wt) {
    case WType::kF32:
      return gemm_t<WType::kF32>(w, ldw, x, ldx, y, ldy, M, K, n0, n1);
    case WType::kF16:
      return gemm_t<WType::kF16>(w, ldw, x, ldx, y, ldy, M, K, n0, n1);
    case WType::kBF16:
      return gemm_t<WType::kBF16>(w, ldw, x, ldx, y, ldy, M, K, n0, n1);
  }
}

// 64 outputs at a time stay in registers across all n rows; then 16, then a masked tail.
template <WType T>
void gemv_t_t(const void* v, int64_t ldv, const float* p, int n, int K, float* y) {
  int k = 0;
  for (; k + 64 <= K; k += 64) {
    __m512 a0 = _mm512_loadu_ps(y + k), a1 = _mm512_loadu_ps(y + k + 16), a2 = _mm512_loadu_ps(y + k + 32),
           a3 = _mm512_loadu_ps(y + k + 48);
    for (int j = 0; j < n; ++j) {
      const __m512 pj = _mm512_set1_ps(p[j]);
      const int64_t off = j * ldv + k;
      a0 = _mm512_fmadd_ps(pj, load16<T>(v, off), a0);
      a1 = _mm512_fmadd_ps(pj, load16<T>(v, off + 16), a1);
      a2 = _mm512_fmadd_ps(pj, load16<T>(v, off + 32), a2);
      a3 = _mm512_fmadd_ps(pj, load16<T>(v, off + 48), a3);
    }
    _mm512_storeu_ps(y + k, a0);
    _mm512_storeu_ps(y + k + 16, a1);
    _mm512_storeu_ps(y + k + 32, a2);
    _mm512_storeu_ps(y + k + 48, a3);
  }
  for (; k < K; k += 16) {
    const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : tail_mask(K - k);
    __m512 a = _mm512_maskz_loadu_ps(m, y + k);
    for (int j = 0; j < n; ++j) a = _mm512_fmadd_ps(_mm512_set1_ps(p[j]), load16_masked<T>(v, j * ldv + k, m), a);
    _mm512_mask_storeu_ps(y + k, m, a);
  }
}

void gemv_t(WType wt, const void* v, int64_t ldv, const float* p, int n, int K, float* y) {
  switch (wt) {
    case WType::kF32:
      return gemv_t_t<WType::kF32>(v, ldv, p, n, K, y);
    case WType::kF16:
      return gemv_t_t<WType::kF16>(v, ldv, p, n, K, y);
    case WType::kBF16:
      return gemv_t_t<WType::kBF16>(v, ldv, p, n, K, y);
  }
}

template <WType T>
void to_f32_t(const void* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? __mmask16(0xFFFF) : tail_mask(int(n - i));
    _mm512_mask_storeu_ps(dst + i, m, load16_masked<T>(src, i, m));
  }
}

void to_f32(WType wt, const void* src, float* dst, int64_t n) {
  switch (wt) {
    case WType::kF32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case WType::kF16:
      return to_f32_t<WType::kF16>(src, dst, n);
    case WType::kBF16:
      return to_f32_t<WType::kBF16>(src, dst, n);
  }
}

}  // namespace

const DenseKernels& dense_kernels_avx512() {
  static const DenseKernels k{gemm, gemv_t, to_f32, dense_kernels_avx2().from_f32, dense_kernels_avx2().silu_mul};
  return k;
}

}  // namespace metharme::kernels
