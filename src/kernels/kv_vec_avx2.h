// 8-float vector traits for the generic attention kernels (kv_flash_impl.h, kv_decode_impl.h);
// include only from files compiled with -mavx2 -mfma -mf16c.
#pragma once

#include <immintrin.h>

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/exp_avx2.h"
#include "kernels/kv.h"

namespace metharme::kernels {

struct V256 {
  using R = __m256;
  static constexpr int W = 8, kScoreVecs = 2, kOutVecs = 3;
  // Decode (kv_decode_impl.h): query heads per scores pass (4 positions x 2 heads = 8
  // accumulators beside 4 value vectors), and heads x 32-value chunks per weighted-sum tile
  // (1 x 2 = 8 accumulators).
  static constexpr int kDecScoreHeads = 2, kDecOutHeads = 1, kDecOutChunks = 2;
  static R load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, R x) { _mm256_storeu_ps(p, x); }
  static R set1(float x) { return _mm256_set1_ps(x); }
  static R zero() { return _mm256_setzero_ps(); }
  static R add(R a, R b) { return _mm256_add_ps(a, b); }
  static R sub(R a, R b) { return _mm256_sub_ps(a, b); }
  static R mul(R a, R b) { return _mm256_mul_ps(a, b); }
  static R max(R a, R b) { return _mm256_max_ps(a, b); }
  static R fma(R a, R b, R c) { return _mm256_fmadd_ps(a, b, c); }
  static R mask_gt(R a, R b, R x) {
    return _mm256_blendv_ps(x, _mm256_set1_ps(-INFINITY), _mm256_cmp_ps(a, b, _CMP_GT_OQ));
  }
  // 2^n built in the exponent field (n in [-126, 127] after exp8's clamp); 0 below -87, -inf
  // included.
  static R exp(R x) {
    const R live = _mm256_cmp_ps(x, _mm256_set1_ps(-87.0f), _CMP_GE_OQ);
    return _mm256_and_ps(live, exp8(x));
  }
  static float hsum(R a) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
  }
  static float hmax(R a) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
  }
  // out[0..4) = the sums of a0..a3.
  static void hsum4(R a0, R a1, R a2, R a3, float* out) {
    const __m256 t = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
    _mm_storeu_ps(out, _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps(t, 1)));
  }
  // The 32 values of one chunk of a row (kv.h formats), unscaled, as 4 vectors; p: the q8 / q4
  // block (scale first) or the chunk's first f16 / f32 value.
  template <KvType T>
  static void chunk(const uint8_t* p, R x[4]) {
    if constexpr (T == KvType::kF32) {
      for (int i = 0; i < 4; ++i) x[i] = _mm256_loadu_ps(reinterpret_cast<const float*>(p) + 8 * i);
    } else if constexpr (T == KvType::kF16) {
      for (int i = 0; i < 4; ++i) x[i] = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 16 * i)));
    } else if constexpr (T == KvType::kQ8) {
      for (int i = 0; i < 4; ++i)
        x[i] =
            _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + 2 + 8 * i))));
    } else {
      const __m128i b = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 2));
      const __m128i m = _mm_set1_epi8(15), eight = _mm_set1_epi8(8);
      const __m128i lo = _mm_sub_epi8(_mm_and_si128(b, m), eight);
      const __m128i hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(b, 4), m), eight);
      x[0] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo));
      x[1] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(lo, 8)));
      x[2] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi));
      x[3] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(hi, 8)));
    }
  }
  static float half(uint16_t h) { return _cvtsh_ss(h); }
  // The fp16 at p in every lane (a 16-bit broadcast and one conversion).
  static R half_bcast(const uint8_t* p) {
    int16_t h;
    std::memcpy(&h, p, 2);
    return _mm256_cvtph_ps(_mm_set1_epi16(h));
  }
};

}  // namespace metharme::kernels
