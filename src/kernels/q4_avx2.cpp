// AVX2 int4 kernels (layout in q4.h). Compiled with -mavx2 -mfma -mf16c; only called when the CPU has them.
//
// int8 design (gemm_q8): a 64-byte step holds 8 k x 16 columns. After masking the low and high
// nibbles, vpmaddubsw multiplies the unsigned codes with 4 broadcast int8 activations per 32-bit
// lane (pairs summed to int16, at most 2*15*127 per pair, so two of them add without overflow);
// vpmaddwd with ones widens to int32. Per block the integer sum is corrected for the zero point
// with the block's activation sum and scaled by scale * activation scale in fp32.
// fp32 design (gemm_f32): each nibble plane is shifted, masked, converted and FMA'd with a
// broadcast activation.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/q4.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline int32_t hsum_i32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

void quantize_q8(const float* x, int n, int block, int8_t* q, float* d, int32_t* sum) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i perm = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  for (int b = 0; b * block < n; ++b) {
    const float* xb = x + size_t(b) * block;
    __m256 mx = _mm256_setzero_ps();
    for (int i = 0; i < block; i += 8) mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(xb + i), abs_mask));
    const float amax = hmax(mx);
    const __m256 id = _mm256_set1_ps(amax > 0 ? 127.0f / amax : 0.0f);
    __m256i s = _mm256_setzero_si256();
    for (int i = 0; i < block; i += 32) {
      __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i), id));
      __m256i bb = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 8), id));
      __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 16), id));
      __m256i e = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(xb + i + 24), id));
      s = _mm256_add_epi32(s, _mm256_add_epi32(_mm256_add_epi32(a, bb), _mm256_add_epi32(c, e)));
      __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, bb), _mm256_packs_epi32(c, e));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + size_t(b) * block + i), _mm256_permutevar8x32_epi32(p, perm));
    }
    d[b] = amax / 127.0f;
    sum[b] = hsum_i32(s);
  }
}

// R activation rows x one 16-column tile.
template <int R>
void q8_tile(const Q4Matrix& w, int t, const Q8Act& x, int m0, float* y, int64_t ldy) {
  const uint8_t* qs = w.qs + size_t(t) * w.tile_qs_bytes();
  const uint16_t* sc = w.scales + size_t(t) * w.n_groups * kQ4TileCols;
  const uint8_t* zp = w.zeros + size_t(t) * w.n_groups * kQ4TileCols;
  const int nb = w.kp / x.block, bpg = w.gs / x.block;
  const int8_t* xq[R];
  const float* xd[R];
  const int32_t* xs[R];
  for (int r = 0; r < R; ++r) {
    xq[r] = x.q + size_t(m0 + r) * x.kp;
    xd[r] = x.d + size_t(m0 + r) * nb;
    xs[r] = x.sum + size_t(m0 + r) * nb;
  }
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 accf[R][2];
  for (int r = 0; r < R; ++r) accf[r][0] = accf[r][1] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m256i acc[R][2];
    for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_si256();
    const int k1 = (b + 1) * x.block;
    for (int k = b * x.block; k < k1; k += kQ4StepK) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + size_t(k) * 8));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + size_t(k) * 8 + 32));
      const __m256i lo0 = _mm256_and_si256(v0, low), hi0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), low);
      const __m256i lo1 = _mm256_and_si256(v1, low), hi1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), low);
      for (int r = 0; r < R; ++r) {
        const __m256i xl = _mm256_set1_epi32(load_i32(xq[r] + k));
        const __m256i xh = _mm256_set1_epi32(load_i32(xq[r] + k + 4));
        const __m256i p0 = _mm256_add_epi16(_mm256_maddubs_epi16(lo0, xl), _mm256_maddubs_epi16(hi0, xh));
        const __m256i p1 = _mm256_add_epi16(_mm256_maddubs_epi16(lo1, xl), _mm256_maddubs_epi16(hi1, xh));
        acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_madd_epi16(p0, ones));
        acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_madd_epi16(p1, ones));
      }
    }
    const int g = b / bpg;
    const __m256i z0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + g * 16)));
    const __m256i z1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + g * 16 + 8)));
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g * 16 + 8)));
    for (int r = 0; r < R; ++r) {
      const __m256i xsv = _mm256_set1_epi32(xs[r][b]);
      const __m256 dv = _mm256_set1_ps(xd[r][b]);
      const __m256 f0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][0], _mm256_mullo_epi32(z0, xsv)));
      const __m256 f1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(acc[r][1], _mm256_mullo_epi32(z1, xsv)));
      accf[r][0] = _mm256_fmadd_ps(_mm256_mul_ps(s0, dv), f0, accf[r][0]);
      accf[r][1] = _mm256_fmadd_ps(_mm256_mul_ps(s1, dv), f1, accf[r][1]);
    }
  }
  const int n0 = t * kQ4TileCols, valid = std::min(kQ4TileCols, w.n - n0);
  for (int r = 0; r < R; ++r) {
    float* yr = y + (m0 + r) * ldy + n0;
    if (valid == kQ4TileCols) {
      _mm256_storeu_ps(yr, accf[r][0]);
      _mm256_storeu_ps(yr + 8, accf[r][1]);
    } else {
      alignas(32) float tmp[16];
      _mm256_store_ps(tmp, accf[r][0]);
      _mm256_store_ps(tmp + 8, accf[r][1]);
      std::memcpy(yr, tmp, size_t(valid) * sizeof(float));
    }
  }
}

// Three rows per pass: 6 int32 accumulators + 4 unpacked weight vectors + 2 broadcasts fill the 16
// ymm registers; four rows spill and run ~25% slower (bench/q4_bench, M = 512).
void gemm_q8(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  for (int t = t0; t < t1; ++t) {
    int m = 0;
    for (; m + 3 <= M; m += 3) q8_tile<3>(w, t, x, m, y, ldy);
    if (M - m == 2) q8_tile<2>(w, t, x, m, y, ldy);
    if (M - m == 1) q8_tile<1>(w, t, x, m, y, ldy);
  }
}

// R rows x one tile, fp32 activations. Two accumulators per (row, half): low and high nibble planes.
template <int R>
void f32_tile(const Q4Matrix& w, int t, const F32Act& x, int m0, float* y, int64_t ldy) {
  const uint8_t* qs = w.qs + size_t(t) * w.tile_qs_bytes();
  const uint16_t* sc = w.scales + size_t(t) * w.n_groups * kQ4TileCols;
  const uint8_t* zp = w.zeros + size_t(t) * w.n_groups * kQ4TileCols;
  const __m256i low = _mm256_set1_epi32(0x0F);
  __m256 accf[R][2];
  for (int r = 0; r < R; ++r) accf[r][0] = accf[r][1] = _mm256_setzero_ps();
  for (int g = 0; g < w.n_groups; ++g) {
    __m256 a[R][2][2];
    for (int r = 0; r < R; ++r)
      for (int h = 0; h < 2; ++h) a[r][h][0] = a[r][h][1] = _mm256_setzero_ps();
    const int k1 = (g + 1) * w.gs;
    for (int k = g * w.gs; k < k1; k += kQ4StepK) {
      const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + size_t(k) * 8));
      const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qs + size_t(k) * 8 + 32));
#define MH_F32_STEP(I)                                                                                     \
  {                                                                                                        \
    const __m256 w0l = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v0, 8 * (I)), low));         \
    const __m256 w0h = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v0, 8 * (I) + 4), low));     \
    const __m256 w1l = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v1, 8 * (I)), low));         \
    const __m256 w1h = _mm256_cvtepi32_ps(_mm256_and_si256(_mm256_srli_epi32(v1, 8 * (I) + 4), low));     \
    for (int r = 0; r < R; ++r) {                                                                          \
      const float* xr = x.x + size_t(m0 + r) * x.kp + k;                                                   \
      const __m256 xl = _mm256_broadcast_ss(xr + (I)), xh = _mm256_broadcast_ss(xr + 4 + (I));             \
      a[r][0][0] = _mm256_fmadd_ps(w0l, xl, a[r][0][0]);                                                   \
      a[r][0][1] = _mm256_fmadd_ps(w0h, xh, a[r][0][1]);                                                   \
      a[r][1][0] = _mm256_fmadd_ps(w1l, xl, a[r][1][0]);                                                   \
      a[r][1][1] = _mm256_fmadd_ps(w1h, xh, a[r][1][1]);                                                   \
    }                                                                                                      \
  }
      MH_F32_STEP(0)
      MH_F32_STEP(1)
      MH_F32_STEP(2)
      MH_F32_STEP(3)
#undef MH_F32_STEP
    }
    const __m256 z0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + g * 16))));
    const __m256 z1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + g * 16 + 8))));
    const __m256 s0 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g * 16)));
    const __m256 s1 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sc + g * 16 + 8)));
    for (int r = 0; r < R; ++r) {
      const __m256 gs = _mm256_set1_ps(x.gsum[size_t(m0 + r) * x.n_groups + size_t(g)]);
      const __m256 t0 = _mm256_fnmadd_ps(z0, gs, _mm256_add_ps(a[r][0][0], a[r][0][1]));
      const __m256 t1 = _mm256_fnmadd_ps(z1, gs, _mm256_add_ps(a[r][1][0], a[r][1][1]));
      accf[r][0] = _mm256_fmadd_ps(s0, t0, accf[r][0]);
      accf[r][1] = _mm256_fmadd_ps(s1, t1, accf[r][1]);
    }
  }
  const int n0 = t * kQ4TileCols, valid = std::min(kQ4TileCols, w.n - n0);
  for (int r = 0; r < R; ++r) {
    float* yr = y + (m0 + r) * ldy + n0;
    alignas(32) float tmp[16];
    _mm256_store_ps(tmp, accf[r][0]);
    _mm256_store_ps(tmp + 8, accf[r][1]);
    std::memcpy(yr, tmp, size_t(valid) * sizeof(float));
  }
}

void gemm_f32(const Q4Matrix& w, const F32Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  for (int t = t0; t < t1; ++t) {
    int m = 0;
    for (; m + 2 <= M; m += 2) f32_tile<2>(w, t, x, m, y, ldy);
    if (m < M) f32_tile<1>(w, t, x, m, y, ldy);
  }
}

// Rows of fp32 weights for sgemm panels: each column's 32-bit lane of a step holds its 8 codes in
// the nibble order k0, k4, k1, k5, k2, k6, k3, k7; one variable shift puts them in k order.
void dequant(const Q4Matrix& w, int t0, int t1, float* out) {
  const __m256i shifts = _mm256_setr_epi32(0, 8, 16, 24, 4, 12, 20, 28);
  const __m256i low = _mm256_set1_epi32(0x0F);
  for (int t = t0; t < t1; ++t) {
    const uint8_t* qs = w.qs + size_t(t) * w.tile_qs_bytes();
    const uint16_t* sc = w.scales + size_t(t) * w.n_groups * kQ4TileCols;
    const uint8_t* zp = w.zeros + size_t(t) * w.n_groups * kQ4TileCols;
    for (int c = 0; c < kQ4TileCols; ++c) {
      float* row = out + (size_t(t - t0) * kQ4TileCols + size_t(c)) * size_t(w.kp);
      const uint8_t* col = qs + size_t(c / 8) * 32 + size_t(c % 8) * 4;
      for (int g = 0; g < w.n_groups; ++g) {
        const __m256 s = _mm256_set1_ps(fp16_to_f32(sc[g * 16 + c]));
        const __m256 z = _mm256_set1_ps(float(zp[g * 16 + c]));
        for (int k = g * w.gs; k < (g + 1) * w.gs; k += kQ4StepK) {
          int32_t word;
          std::memcpy(&word, col + size_t(k) * 8, 4);
          const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts), low);
          _mm256_storeu_ps(row + k, _mm256_mul_ps(s, _mm256_sub_ps(_mm256_cvtepi32_ps(q), z)));
        }
      }
    }
  }
}

}  // namespace

const Q4Kernels& q4_kernels_avx2() {
  static const Q4Kernels k{quantize_q8, gemm_q8, gemm_f32, dequant};
  return k;
}

}  // namespace metharme::kernels
