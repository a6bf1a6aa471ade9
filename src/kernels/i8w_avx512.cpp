// AVX-512 VNNI int8-code kernels (layout in i8w.h): a whole 64-byte step (4 k x 16 columns) is one
// zmm. vpdpbusd wants unsigned x signed bytes, so the codes are flipped to c + 128 (one xor per
// step, shared by every row) and the extra 128 * (sum of x) is taken off per 16 k with the
// activations' 16-wide sums. Compiled with -mavx512{f,bw,vl,dq,vnni}; only called when the CPU
// has them (kernels/isa.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
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

constexpr size_t kPrefetchBytes = 2048;
constexpr size_t kFarPrefetchBytes = 8192;  // a second one into L2, as in q4_avx512.cpp

// Scale si (rows si*sb ..) of tile t in either layout (i8w.h).
inline __m512 scale16(const I8Matrix& w, int t, int si) {
  const size_t i = (size_t(t) * size_t(w.kp / w.sb) + size_t(si)) * kI8TileCols;
  if (!w.ksc) return _mm512_loadu_ps(w.scales + i);
  const size_t s = (size_t(t) * size_t(w.kp / 256) + size_t(si * w.sb / 256)) * kI8TileCols;
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.kd + s)));
  const __m512i v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.ksc + i)));
  return _mm512_mul_ps(d, _mm512_cvtepi32_ps(v));
}
// Add b (rows 32b ..) of tile t (the matrix has adds or mins).
inline __m512 add16(const I8Matrix& w, int t, int b) {
  const size_t i = (size_t(t) * size_t(w.kp / 32) + size_t(b)) * kI8TileCols;
  if (!w.kmin) return _mm512_loadu_ps(w.adds + i);
  const size_t s = (size_t(t) * size_t(w.kp / 256) + size_t(b / 8)) * kI8TileCols;
  const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.kdmin + s)));
  const __m512i v = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.kmin + i)));
  return _mm512_sub_ps(_mm512_setzero_ps(), _mm512_mul_ps(d, _mm512_cvtepi32_ps(v)));
}

// Rows m0..m0+R-1 of tile t.
template <int R>
void tile_rows(const I8Matrix& w, int t, const I8Act& x, int m0, float* y, int64_t ldy) {
  const int nb = w.kp / 32;
  const int8_t* qs = w.qs + size_t(t) * tile_bytes(w);
  const bool adds = w.adds || w.kmin;
  const __m512i flip = _mm512_set1_epi8(char(0x80));
  __m512 accf[R];
  for (int r = 0; r < R; ++r) accf[r] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    __m512 xd[R];
    for (int r = 0; r < R; ++r) xd[r] = _mm512_set1_ps(x.d[size_t(m0 + r) * size_t(nb) + size_t(b)]);
    for (int h = 0; h < 2; ++h) {
      const int k0 = 32 * b + 16 * h;
      const int8_t* q = qs + size_t(k0 / kI8StepK) * kI8StepBytes;
      __m512i acc[R];
      for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_si512();
      for (int i = 0; i < 4; ++i) {
        if (R == 1) {
          _mm_prefetch(reinterpret_cast<const char*>(q + i * 64 + kPrefetchBytes), _MM_HINT_T0);
          _mm_prefetch(reinterpret_cast<const char*>(q + i * 64 + kFarPrefetchBytes), _MM_HINT_T2);
        }
        const __m512i u = _mm512_xor_si512(_mm512_loadu_si512(q + i * 64), flip);
        for (int r = 0; r < R; ++r) {
          const int8_t* xk = x.q + size_t(m0 + r) * size_t(x.kp) + size_t(k0 + 4 * i);
          acc[r] = _mm512_dpbusd_epi32(acc[r], u, _mm512_set1_epi32(load_i32(xk)));
        }
      }
      const __m512 s = scale16(w, t, w.sb == 16 ? 2 * b + h : b);
      for (int r = 0; r < R; ++r) {
        const int32_t xs = x.s16[size_t(m0 + r) * size_t(2 * nb) + size_t(2 * b + h)];
        const __m512i dot = _mm512_sub_epi32(acc[r], _mm512_set1_epi32(128 * xs));
        accf[r] = _mm512_fmadd_ps(_mm512_mul_ps(s, xd[r]), _mm512_cvtepi32_ps(dot), accf[r]);
      }
    }
    if (adds) {
      const __m512 a = add16(w, t, b);
      for (int r = 0; r < R; ++r) {
        const int32_t* s16 = x.s16 + size_t(m0 + r) * size_t(2 * nb) + size_t(2 * b);
        accf[r] = _mm512_fmadd_ps(_mm512_mul_ps(a, xd[r]), _mm512_set1_ps(float(s16[0] + s16[1])), accf[r]);
      }
    }
  }
  const int n0 = t * kI8TileCols, valid = std::min(kI8TileCols, w.n - n0);
  const __mmask16 mask = __mmask16((1u << valid) - 1u);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(y + (m0 + r) * ldy + n0, mask, accf[r]);
}

void gemm(const I8Matrix& w, const I8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  for (int t = t0; t < t1; ++t) {
    int m = 0;
    for (; m + 4 <= M; m += 4) tile_rows<4>(w, t, x, m, y, ldy);
    for (; m + 2 <= M; m += 2) tile_rows<2>(w, t, x, m, y, ldy);
    for (; m < M; ++m) tile_rows<1>(w, t, x, m, y, ldy);
  }
}

}  // namespace

const I8Kernels& i8_kernels_avx512() {
  static const I8Kernels k{gemm};
  return k;
}

}  // namespace metharme::kernels
