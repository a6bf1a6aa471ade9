// AVX2 int8-code kernels (layout in i8w.h). Compiled with -mavx2 -mfma -mf16c; only called when
// the CPU has them.
//
// A 64-byte step is 4 k x 16 columns: two 256-bit loads of 8 columns. vpmaddubsw wants unsigned x
// signed bytes, so the codes' magnitudes (vpabsb) meet the activations with the codes' signs
// (vpsignb): |c| * sign(c) * x = c * x, pairs summed to int16 (at most 2 * 128 * 127 = 32512).
// When every |code| <= 32 (Q5_K, Q6_K) four steps add up in int16 (4 * 2 * 32 * 127 = 32512)
// before one vpmaddwd widens them; Q8_0 widens every step.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/i8w.h"

namespace metharme::kernels {

namespace {

inline size_t tile_bytes(const I8Matrix& w) { return size_t(w.kp) / kI8StepK * kI8StepBytes; }

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

constexpr size_t kPrefetchBytes = 2048;  // as in q4_avx2.cpp: decode needs more reads in flight

// acc[r][j] = the dot products of 16 k (4 steps at q) for rows r < R (activations xk + r * ldx),
// columns 8j..8j+7.
template <int R, bool Small>
inline void dot16(const int8_t* q, const int8_t* const* xk, __m256i (*acc)[2]) {
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i s[R][2];
  for (int r = 0; r < R; ++r) s[r][0] = s[r][1] = _mm256_setzero_si256();
  for (int i = 0; i < 4; ++i) {
    if (R == 1) _mm_prefetch(reinterpret_cast<const char*>(q + i * 64 + kPrefetchBytes), _MM_HINT_T0);
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * 64));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + i * 64 + 32));
    const __m256i a0 = _mm256_abs_epi8(v0), a1 = _mm256_abs_epi8(v1);
    for (int r = 0; r < R; ++r) {
      const __m256i xb = _mm256_set1_epi32(load_i32(xk[r] + 4 * i));
      const __m256i p0 = _mm256_maddubs_epi16(a0, _mm256_sign_epi8(xb, v0));
      const __m256i p1 = _mm256_maddubs_epi16(a1, _mm256_sign_epi8(xb, v1));
      if (Small) {
        s[r][0] = _mm256_add_epi16(s[r][0], p0);
        s[r][1] = _mm256_add_epi16(s[r][1], p1);
      } else {
        s[r][0] = _mm256_add_epi32(s[r][0], _mm256_madd_epi16(p0, ones));
        s[r][1] = _mm256_add_epi32(s[r][1], _mm256_madd_epi16(p1, ones));
      }
    }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 2; ++j) acc[r][j] = Small ? _mm256_madd_epi16(s[r][j], ones) : s[r][j];
}

inline void store16(float* y, const __m256 acc[2], int valid) {
  if (valid == kI8TileCols) {
    _mm256_storeu_ps(y, acc[0]);
    _mm256_storeu_ps(y + 8, acc[1]);
    return;
  }
  alignas(32) float tmp[16];
  _mm256_store_ps(tmp, acc[0]);
  _mm256_store_ps(tmp + 8, acc[1]);
  std::memcpy(y, tmp, size_t(valid) * sizeof(float));
}

// Scale si (rows si*sb ..) of tile t, columns 8h..8h+7, in either layout (i8w.h).
inline __m256 scale8(const I8Matrix& w, int t, int si, int h) {
  const size_t i = (size_t(t) * size_t(w.kp / w.sb) + size_t(si)) * kI8TileCols + size_t(8 * h);
  if (!w.ksc) return _mm256_loadu_ps(w.scales + i);
  const size_t s = (size_t(t) * size_t(w.kp / 256) + size_t(si * w.sb / 256)) * kI8TileCols + size_t(8 * h);
  const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.kd + s)));
  const __m256i v = _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.ksc + i)));
  return _mm256_mul_ps(d, _mm256_cvtepi32_ps(v));
}
// Add b (rows 32b ..) of tile t, columns 8h..8h+7 (the matrix has adds or mins).
inline __m256 add8(const I8Matrix& w, int t, int b, int h) {
  const size_t i = (size_t(t) * size_t(w.kp / 32) + size_t(b)) * kI8TileCols + size_t(8 * h);
  if (!w.kmin) return _mm256_loadu_ps(w.adds + i);
  const size_t s = (size_t(t) * size_t(w.kp / 256) + size_t(b / 8)) * kI8TileCols + size_t(8 * h);
  const __m256 d = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.kdmin + s)));
  const __m256i v = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(w.kmin + i)));
  return _mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(d, _mm256_cvtepi32_ps(v)));
}

// Rows m0..m0+R-1 of tile t.
template <int R, bool Small>
void tile_rows(const I8Matrix& w, int t, const I8Act& x, int m0, float* y, int64_t ldy) {
  const int nb = w.kp / 32;
  const int8_t* qs = w.qs + size_t(t) * tile_bytes(w);
  const bool adds = w.adds || w.kmin;
  __m256 accf[R][2];
  for (int r = 0; r < R; ++r) accf[r][0] = accf[r][1] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m256 xd[R];
    for (int r = 0; r < R; ++r) xd[r] = _mm256_set1_ps(x.d[size_t(m0 + r) * size_t(nb) + size_t(b)]);
    for (int h = 0; h < 2; ++h) {
      const int8_t* xk[R];
      for (int r = 0; r < R; ++r) xk[r] = x.q + size_t(m0 + r) * size_t(x.kp) + size_t(32 * b + 16 * h);
      __m256i acc[R][2];
      dot16<R, Small>(qs + size_t(8 * b + 4 * h) * kI8StepBytes, xk, acc);
      const int si = w.sb == 16 ? 2 * b + h : b;
      const __m256 s0 = scale8(w, t, si, 0), s1 = scale8(w, t, si, 1);
      for (int r = 0; r < R; ++r) {
        accf[r][0] = _mm256_fmadd_ps(_mm256_mul_ps(s0, xd[r]), _mm256_cvtepi32_ps(acc[r][0]), accf[r][0]);
        accf[r][1] = _mm256_fmadd_ps(_mm256_mul_ps(s1, xd[r]), _mm256_cvtepi32_ps(acc[r][1]), accf[r][1]);
      }
    }
    if (adds) {
      const __m256 a0 = add8(w, t, b, 0), a1 = add8(w, t, b, 1);
      for (int r = 0; r < R; ++r) {
        const int32_t* s16 = x.s16 + size_t(m0 + r) * size_t(2 * nb) + size_t(2 * b);
        const __m256 xs = _mm256_set1_ps(float(s16[0] + s16[1]));
        accf[r][0] = _mm256_fmadd_ps(_mm256_mul_ps(a0, xd[r]), xs, accf[r][0]);
        accf[r][1] = _mm256_fmadd_ps(_mm256_mul_ps(a1, xd[r]), xs, accf[r][1]);
      }
    }
  }
  const int n0 = t * kI8TileCols, valid = std::min(kI8TileCols, w.n - n0);
  for (int r = 0; r < R; ++r) store16(y + (m0 + r) * ldy + n0, accf[r], valid);
}

template <bool Small>
void gemm_t(const I8Matrix& w, const I8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  for (int t = t0; t < t1; ++t) {
    int m = 0;
    for (; m + 4 <= M; m += 4) tile_rows<4, Small>(w, t, x, m, y, ldy);
    for (; m + 2 <= M; m += 2) tile_rows<2, Small>(w, t, x, m, y, ldy);
    for (; m < M; ++m) tile_rows<1, Small>(w, t, x, m, y, ldy);
  }
}

void gemm(const I8Matrix& w, const I8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  if (w.small)
    gemm_t<true>(w, x, M, t0, t1, y, ldy);
  else
    gemm_t<false>(w, x, M, t0, t1, y, ldy);
}

}  // namespace

const I8Kernels& i8_kernels_avx2() {
  static const I8Kernels k{gemm};
  return k;
}

}  // namespace metharme::kernels
