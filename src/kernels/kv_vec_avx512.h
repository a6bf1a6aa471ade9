// 16-float vector traits for the generic attention kernels (kv_flash_impl.h, kv_decode_impl.h);
// include only from files compiled with the AVX-512 flags (CMakeLists.txt).
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/kv.h"

namespace metharme::kernels {

struct V512 {
  using R = __m512;
  static constexpr int W = 16, kScoreVecs = 4, kOutVecs = 4;
  // Decode (kv_decode_impl.h): 4 positions x 4 heads = 16 score accumulators; weighted-sum
  // tiles of 2 heads x 4 chunks (128 values) = 16 accumulators.
  static constexpr int kDecScoreHeads = 4, kDecOutHeads = 2, kDecOutChunks = 4;
  static R load(const float* p) { return _mm512_loadu_ps(p); }
  static void store(float* p, R x) { _mm512_storeu_ps(p, x); }
  static R set1(float x) { return _mm512_set1_ps(x); }
  static R zero() { return _mm512_setzero_ps(); }
  static R add(R a, R b) { return _mm512_add_ps(a, b); }
  static R sub(R a, R b) { return _mm512_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm512_mul_ps(a, b); }
  static R max(R a, R b) { return _mm512_max_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm512_fmadd_ps(a, b, c); }
  static R mask_gt(R a, R b, R x) {
    return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ), _mm512_set1_ps(-INFINITY));
  }
  // exp(x) = 2^n * e^r, n = round(x / ln 2), |r| <= ln2 / 2 (Cody-Waite split of ln 2), e^r by
  // its degree-7 Taylor polynomial; scalef builds 2^n. Below -87 (-inf included): 0.
  static R exp(R x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-87.0f), _CMP_GE_OQ);
    x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
    const R n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT);
    R r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    R p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
  }
  static float hsum(R a) { return _mm512_reduce_add_ps(a); }
  static float hmax(R a) { return _mm512_reduce_max_ps(a); }
  // 16 -> 8 lanes (pairwise halves added).
  static __m256 fold(R a) {
    return _mm256_add_ps(_mm512_castps512_ps256(a), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(a), 1)));
  }
  // out[0..4) = the sums of a0..a3.
  static void hsum4(R a0, R a1, R a2, R a3, float* out) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(fold(a0), fold(a1)), _mm256_hadd_ps(fold(a2), fold(a3)));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
  // The 32 values of one chunk of a row (kv.h formats), unscaled, as 2 vectors; p: the q8 / q4
  // block (scale first) or the chunk's first f16 / f32 value.
  template <KvType T>
  static void chunk(const uint8_t* p, R x[2]) {
    if constexpr (T == KvType::kF32) {
      x[0] = _mm512_loadu_ps(p);
      x[1] = _mm512_loadu_ps(p + 64);
    } else if constexpr (T == KvType::kF16) {
      x[0] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
      x[1] = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 32)));
    } else if constexpr (T == KvType::kQ8) {
      x[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2))));
      x[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 18))));
    } else {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
      const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
      x[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(b, m), eight)));
      x[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight)));
    }
  }
  static float half(uint16_t h) { return _cvtsh_ss(h); }
  // The fp16 at p in every lane (a 16-bit broadcast and one conversion).
  static R half_bcast(const uint8_t* p) {
    int16_t h;
    std::memcpy(&h, p, 2);
    return _mm512_cvtph_ps(_mm256_set1_epi16(h));
  }
};

}  // namespace metharme::kernels
