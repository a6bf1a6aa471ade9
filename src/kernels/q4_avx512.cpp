// AVX-512 VNNI int4 kernels (layout in q4.h): a whole 64-byte step (8 k x 16 columns) is one zmm,
// and vpdpbusd multiplies 4 unsigned codes by 4 signed int8 activations per 32-bit lane and
// accumulates in one instruction. Up to 8 rows share each unpacked step (q8_tile<R>), so 2-8 row
// products (continuous batching, speculative verification) run the prefill kernel's loop.
// Compiled with -mavx512{f,bw,vl,dq,vnni}; only called when the CPU has them (kernels/isa.cpp).
// GCC 12's own AVX-512 headers trip -Wmaybe-uninitialized (their _mm512_undefined_* helpers).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <cstring>

#include "kernels/q4.h"

namespace metharme::kernels {

namespace {

// Not q4.h's inline tile_qs_bytes(): an inline function compiled here with wider ISA flags could be
// the copy the linker keeps for every caller.
constexpr size_t kPrefetchBytes = 2048;  // as in q4_avx2.cpp
// A second, far prefetch into L2 (T2 hint, 8 KiB ahead): decode is bound by how many lines are in
// flight, not by compute, and the near prefetch alone kept too few (bench/RESULTS.md: 2 threads at
// M = 1 read ~5-10% more GB/s with it on Zen 5).
constexpr size_t kFarPrefetchBytes = 8192;

inline size_t tile_bytes(const Q4Matrix& w) { return size_t(w.kp) / kQ4StepK * kQ4StepBytes; }

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// The 16 values of a Q4_K super-block factor (kd or kdmin) times a block's 6-bit integers.
inline __m512 k_product16(const uint16_t* f, const uint8_t* v, int t, int g, int n_groups) {
  const size_t gi = (size_t(t) * size_t(n_groups) + size_t(g)) * kQ4TileCols;
  const size_t si = (size_t(t) * size_t(n_groups / 8) + size_t(g / 8)) * kQ4TileCols;
  const __m512 fv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(f + si)));
  const __m512i vi = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(v + gi)));
  return _mm512_mul_ps(fv, _mm512_cvtepi32_ps(vi));
}

// The 16 scales of tile t, group g (fp16, fp32 or Q4_K's, see q4.h).
inline __m512 scales16(const Q4Matrix& w, int t, int g) {
  if (w.ksc) return k_product16(w.kd, w.ksc, t, g, w.n_groups);
  const size_t i = (size_t(t) * size_t(w.n_groups) + size_t(g)) * kQ4TileCols;
  if (w.scales_f32) return _mm512_loadu_ps(w.scales_f32 + i);
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + i)));
}
// Q4_K's 16 mins of tile t, group g (only when w.ksc is set).
inline __m512 mins16(const Q4Matrix& w, int t, int g) { return k_product16(w.kdmin, w.kmin, t, g, w.n_groups); }

// The zero points of tile t (null for Q4_K, whose zero is the constant 0).
inline const uint8_t* tile_zeros(const Q4Matrix& w, int t) {
  return w.zeros ? w.zeros + size_t(t) * size_t(w.n_groups) * kQ4TileCols : nullptr;
}

// The negated zero points of tile t, group g, as int32 (a constant when the matrix has one).
inline __m512i neg_zeros16(const Q4Matrix& w, const uint8_t* zp, int g) {
  if (w.uniform_zero >= 0) return _mm512_set1_epi32(-w.uniform_zero);
  const __m512i z = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp + g * 16)));
  return _mm512_sub_epi32(_mm512_setzero_si512(), z);
}

// R rows x one tile. Each block's integer sum starts at -zero * (the block's activation sum), so
// the zero point costs one vpmulld per row and block instead of an fp32 correction, and the sum
// is exactly the scalar twin's isum - zero * sum (|.| < 2^24 for blocks of up to 128, zeros of up
// to 255). kShiftHi: the high nibbles are shifted down (one op per step, shared by the rows) and
// join the low ones' accumulator, which saves two ops per row and block in the epilogue, where
// with blocks of 32 (GGUF Q4_0/Q4_K) the epilogue is as long as the block's products; without it
// they stay in place (16 x the code) in a second accumulator, one op less per step for 1 row.
// kSteps: steps per block when known at compile time (4: blocks of 32, unrolled), else 0.
template <int R, bool kShiftHi, int kSteps>
void q8_tile(const Q4Matrix& w, int t, const Q8Act& x, int m0, float* y, int64_t ldy) {
  const uint8_t* qs = w.qs + size_t(t) * tile_bytes(w);
  const uint8_t* zp = tile_zeros(w, t);
  const int nb = w.kp / x.block, bpg = w.gs / x.block;
  const int8_t* xq[R];
  const float* xd[R];
  const int32_t* xs[R];
  for (int r = 0; r < R; ++r) {
    xq[r] = x.q + size_t(m0 + r) * x.kp;
    xd[r] = x.d + size_t(m0 + r) * nb;
    xs[r] = x.sum + size_t(m0 + r) * nb;
  }
  const __m512i low = _mm512_set1_epi8(0x0F);
  constexpr int kAcc = kShiftHi ? 1 : 2;
  __m512 accf[R];
  for (int r = 0; r < R; ++r) accf[r] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    const int g = b / bpg;
    const __m512i nz = neg_zeros16(w, zp, g);
    __m512i acc[R][kAcc];
    for (int r = 0; r < R; ++r) {
      acc[r][0] = _mm512_mullo_epi32(nz, _mm512_set1_epi32(xs[r][b]));
      if constexpr (!kShiftHi) acc[r][1] = _mm512_setzero_si512();
    }
    const int steps = kSteps ? kSteps : x.block / kQ4StepK;
    for (int i = 0; i < steps; ++i) {
      const int k = b * x.block + i * kQ4StepK;
      _mm_prefetch(reinterpret_cast<const char*>(qs + size_t(k) * 8 + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(qs + size_t(k) * 8 + kFarPrefetchBytes), _MM_HINT_T2);
      const __m512i v = _mm512_loadu_si512(qs + size_t(k) * 8);
      const __m512i lo = _mm512_and_si512(v, low);
      // At most 16 * 15 * 127 * 4 per lane and step when the high nibbles stay in place.
      const __m512i hi = kShiftHi ? _mm512_and_si512(_mm512_srli_epi16(v, 4), low) : _mm512_andnot_si512(low, v);
      for (int r = 0; r < R; ++r) {
        acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], lo, _mm512_set1_epi32(load_i32(xq[r] + k)));
        acc[r][kAcc - 1] = _mm512_dpbusd_epi32(acc[r][kAcc - 1], hi, _mm512_set1_epi32(load_i32(xq[r] + k + 4)));
      }
    }
    const __m512 s = scales16(w, t, g);
    for (int r = 0; r < R; ++r) {
      __m512i isum = acc[r][0];
      if constexpr (!kShiftHi) isum = _mm512_add_epi32(isum, _mm512_srai_epi32(acc[r][1], 4));
      accf[r] = _mm512_fmadd_ps(_mm512_mul_ps(s, _mm512_set1_ps(xd[r][b])), _mm512_cvtepi32_ps(isum), accf[r]);
    }
    if (w.ksc) {  // - min x (the block's activation sum)
      const __m512 mn = mins16(w, t, g);
      for (int r = 0; r < R; ++r) accf[r] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(xd[r][b] * float(xs[r][b])), accf[r]);
    }
  }
  const int n0 = t * kQ4TileCols, valid = w.n - n0 < kQ4TileCols ? w.n - n0 : kQ4TileCols;
  const __mmask16 mask = __mmask16((1u << valid) - 1u);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(y + (m0 + r) * ldy + n0, mask, accf[r]);
}

// R rows x tiles t and t + 1 at blocks of 32 with shifted high nibbles: each broadcast activation
// feeds both tiles, half the broadcast loads per vpdpbusd of q8_tile<8>. 4 rows: M = 4 ran
// 1.15-1.35x the one-tile kernel; 6 rows were no faster than 4, and at gs 128 it ran 0.8x
// (bench/RESULTS.md issue 17).
template <int R>
void q8_tile2(const Q4Matrix& w, int t, const Q8Act& x, int m0, float* y, int64_t ldy) {
  const size_t tb = tile_bytes(w);
  const uint8_t* qs = w.qs + size_t(t) * tb;
  const size_t zstride = size_t(w.n_groups) * kQ4TileCols;
  const uint8_t* zp = tile_zeros(w, t);
  const int nb = w.kp / 32, bpg = w.gs / 32;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 accf[R][2];
  for (int r = 0; r < R; ++r) accf[r][0] = accf[r][1] = _mm512_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    const int g = b / bpg;
    const __m512i nz[2] = {neg_zeros16(w, zp, g), neg_zeros16(w, zp ? zp + zstride : zp, g)};
    __m512i acc[R][2];
    for (int r = 0; r < R; ++r) {
      const int32_t sum = x.sum[size_t(m0 + r) * size_t(nb) + size_t(b)];
      if (w.uniform_zero >= 0) {  // one scalar product, shared by both tiles
        acc[r][0] = acc[r][1] = _mm512_set1_epi32(-w.uniform_zero * sum);
        continue;
      }
      const __m512i xs = _mm512_set1_epi32(sum);
      acc[r][0] = _mm512_mullo_epi32(nz[0], xs);
      acc[r][1] = _mm512_mullo_epi32(nz[1], xs);
    }
    for (int i = 0; i < 4; ++i) {
      const size_t k = size_t(b) * 32 + size_t(i) * kQ4StepK;
      __m512i lo[2], hi[2];
      for (int j = 0; j < 2; ++j) {
        const uint8_t* q = qs + size_t(j) * tb + k * 8;
        _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(q + kFarPrefetchBytes), _MM_HINT_T2);
        const __m512i v = _mm512_loadu_si512(q);
        lo[j] = _mm512_and_si512(v, low);
        hi[j] = _mm512_and_si512(_mm512_srli_epi16(v, 4), low);
      }
      for (int r = 0; r < R; ++r) {
        const int8_t* xk = x.q + size_t(m0 + r) * size_t(x.kp) + k;
        const __m512i xl = _mm512_set1_epi32(load_i32(xk)), xh = _mm512_set1_epi32(load_i32(xk + 4));
        for (int j = 0; j < 2; ++j) {
          acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], lo[j], xl);
          acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], hi[j], xh);
        }
      }
    }
    const __m512 s[2] = {scales16(w, t, g), scales16(w, t + 1, g)};
    for (int r = 0; r < R; ++r) {
      const __m512 d = _mm512_set1_ps(x.d[size_t(m0 + r) * size_t(nb) + size_t(b)]);
      for (int j = 0; j < 2; ++j)
        accf[r][j] = _mm512_fmadd_ps(_mm512_mul_ps(s[j], d), _mm512_cvtepi32_ps(acc[r][j]), accf[r][j]);
    }
    if (w.ksc) {  // - min x (the block's activation sum)
      const __m512 mn[2] = {mins16(w, t, g), mins16(w, t + 1, g)};
      for (int r = 0; r < R; ++r) {
        const size_t bi = size_t(m0 + r) * size_t(nb) + size_t(b);
        const __m512 ds = _mm512_set1_ps(x.d[bi] * float(x.sum[bi]));
        for (int j = 0; j < 2; ++j) accf[r][j] = _mm512_fnmadd_ps(mn[j], ds, accf[r][j]);
      }
    }
  }
  for (int j = 0; j < 2; ++j) {
    const int n0 = (t + j) * kQ4TileCols, valid = w.n - n0 < kQ4TileCols ? w.n - n0 : kQ4TileCols;
    const __mmask16 mask = __mmask16((1u << valid) - 1u);
    for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(y + (m0 + r) * ldy + n0, mask, accf[r][j]);
  }
}

// R <= 8 rows of tiles [t0, t1): 8 per tile pass (12 ran 13-16% slower at blocks of 32: the
// accumulators spilled).
template <int kSteps>
void gemm_q8_rows(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  // Shifted high nibbles for 8 rows, and for 3-7 at blocks of 32 (an epilogue every 4 steps). At
  // longer blocks 3-7 rows keep two accumulators: there the shift's op per step buys a smaller
  // share of the loop, and g128 M = 4 measured the same either way (bench/RESULTS.md issue 17).
  constexpr bool kShift = kSteps == 4;
  int t = t0;
  if constexpr (kSteps == 4)
    for (; t + 2 <= t1 && M >= 4; t += 2) {
      int m = 0;
      for (; m + 4 <= M; m += 4) q8_tile2<4>(w, t, x, m, y, ldy);
      for (; m < M; ++m) q8_tile2<1>(w, t, x, m, y, ldy);
    }
  for (; t < t1; ++t) {
    int m = 0;
    for (; m + 8 <= M; m += 8) q8_tile<8, true, kSteps>(w, t, x, m, y, ldy);
    switch (M - m) {
      case 7:
        q8_tile<7, kShift, kSteps>(w, t, x, m, y, ldy);
        break;
      case 6:
        q8_tile<6, kShift, kSteps>(w, t, x, m, y, ldy);
        break;
      case 5:
        q8_tile<5, kShift, kSteps>(w, t, x, m, y, ldy);
        break;
      case 4:
        q8_tile<4, kShift, kSteps>(w, t, x, m, y, ldy);
        break;
      case 3:
        q8_tile<3, kShift, kSteps>(w, t, x, m, y, ldy);
        break;
      case 2:
        q8_tile<2, false, kSteps>(w, t, x, m, y, ldy);
        break;
      case 1:
        q8_tile<1, false, kSteps>(w, t, x, m, y, ldy);
        break;
      default:
        break;
    }
  }
}

// Prefill walks the tiles once per chunk of kRowChunk rows, so a tile's passes read the chunk's
// activations from L2 rather than all M rows' from L3 (kRowChunk x kp bytes: 128 KiB at K = 4096).
constexpr int kRowChunk = 32;

template <int kSteps>
void gemm_q8_steps(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  const int nb = x.kp / x.block;
  for (int m0 = 0; m0 < M; m0 += kRowChunk) {
    const Q8Act xc{x.q + size_t(m0) * size_t(x.kp), x.d + size_t(m0) * size_t(nb), x.sum + size_t(m0) * size_t(nb),
                   x.kp, x.block};
    gemm_q8_rows<kSteps>(w, xc, M - m0 < kRowChunk ? M - m0 : kRowChunk, t0, t1, y + m0 * ldy, ldy);
  }
}

void gemm_q8(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  if (x.block == 32)
    gemm_q8_steps<4>(w, x, M, t0, t1, y, ldy);
  else
    gemm_q8_steps<0>(w, x, M, t0, t1, y, ldy);
}

template <int R>
void f32_tile(const Q4Matrix& w, int t, const F32Act& x, int m0, float* y, int64_t ldy) {
  const uint8_t* qs = w.qs + size_t(t) * tile_bytes(w);
  const uint8_t* zp = tile_zeros(w, t);
  const __m512i low = _mm512_set1_epi32(0x0F);
  __m512 accf[R];
  for (int r = 0; r < R; ++r) accf[r] = _mm512_setzero_ps();
  for (int g = 0; g < w.n_groups; ++g) {
    __m512 a[R][2];
    for (int r = 0; r < R; ++r) a[r][0] = a[r][1] = _mm512_setzero_ps();
    const int k1 = (g + 1) * w.gs;
    for (int k = g * w.gs; k < k1; k += kQ4StepK) {
      const __m512i v = _mm512_loadu_si512(qs + size_t(k) * 8);
      for (int i = 0; i < 4; ++i) {
        const __m512 wl = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(8 * i)), low));
        const __m512 wh = _mm512_cvtepi32_ps(_mm512_and_si512(_mm512_srlv_epi32(v, _mm512_set1_epi32(8 * i + 4)), low));
        for (int r = 0; r < R; ++r) {
          const float* xr = x.x + size_t(m0 + r) * x.kp + k;
          a[r][0] = _mm512_fmadd_ps(wl, _mm512_set1_ps(xr[i]), a[r][0]);
          a[r][1] = _mm512_fmadd_ps(wh, _mm512_set1_ps(xr[4 + i]), a[r][1]);
        }
      }
    }
    const __m512 s = scales16(w, t, g);
    // Q4_K: zero 0 and W = s * code - min; otherwise W = s * (code - zero).
    const __m512 z =
        zp ? _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zp + g * 16))))
           : _mm512_setzero_ps();
    const __m512 mn = w.ksc ? mins16(w, t, g) : _mm512_setzero_ps();
    for (int r = 0; r < R; ++r) {
      const __m512 gs = _mm512_set1_ps(x.gsum[size_t(m0 + r) * x.n_groups + size_t(g)]);
      accf[r] = _mm512_fmadd_ps(s, _mm512_fnmadd_ps(z, gs, _mm512_add_ps(a[r][0], a[r][1])), accf[r]);
      accf[r] = _mm512_fnmadd_ps(mn, gs, accf[r]);
    }
  }
  const int n0 = t * kQ4TileCols, valid = w.n - n0 < kQ4TileCols ? w.n - n0 : kQ4TileCols;
  const __mmask16 mask = __mmask16((1u << valid) - 1u);
  for (int r = 0; r < R; ++r) _mm512_mask_storeu_ps(y + (m0 + r) * ldy + n0, mask, accf[r]);
}

void gemm_f32(const Q4Matrix& w, const F32Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  for (int t = t0; t < t1; ++t) {
    int m = 0;
    for (; m + 4 <= M; m += 4) f32_tile<4>(w, t, x, m, y, ldy);
    switch (M - m) {
      case 3:
        f32_tile<3>(w, t, x, m, y, ldy);
        break;
      case 2:
        f32_tile<2>(w, t, x, m, y, ldy);
        break;
      case 1:
        f32_tile<1>(w, t, x, m, y, ldy);
        break;
      default:
        break;
    }
  }
}

}  // namespace

const Q4Kernels& q4_kernels_avx512() {
  // Activation quantization and sgemm panels are not the bottleneck; the AVX2 versions serve here too.
  static const Q4Kernels k{q4_kernels_avx2().quantize_q8, gemm_q8, gemm_f32, q4_kernels_avx2().dequant};
  return k;
}

}  // namespace metharme::kernels
