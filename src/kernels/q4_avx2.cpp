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

namespace metharme::kernels {

namespace {

// Not q4.h's inline tile_qs_bytes(): an inline function compiled here with wider ISA flags could be
// the copy the linker keeps for every caller.
inline size_t tile_bytes(const Q4Matrix& w) { return size_t(w.kp) / kQ4StepK * kQ4StepBytes; }

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

// A Q4_K super-block factor (kd or kdmin) times a block's 6-bit integers, columns 8h..8h+7.
inline __m256 k_product8(const uint16_t* f, const uint8_t* v, int t, int g, int h, int n_groups) {
  const size_t gi = (size_t(t) * size_t(n_groups) + size_t(g)) * kQ4TileCols + size_t(h) * 8;
  const size_t si = (size_t(t) * size_t(n_groups / 8) + size_t(g / 8)) * kQ4TileCols + size_t(h) * 8;
  const __m256 fv = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(f + si)));
  const __m256i vi = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(v + gi)));
  return _mm256_mul_ps(fv, _mm256_cvtepi32_ps(vi));
}

// Scales of tile t, group g: eight columns 8h..8h+7, or column c (fp16, fp32 or Q4_K's, see q4.h).
inline __m256 scales8(const Q4Matrix& w, int t, int g, int h) {
  if (w.ksc) return k_product8(w.kd, w.ksc, t, g, h, w.n_groups);
  const size_t i = (size_t(t) * size_t(w.n_groups) + size_t(g)) * kQ4TileCols + size_t(h) * 8;
  if (w.scales_f32) return _mm256_loadu_ps(w.scales_f32 + i);
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w.scales + i)));
}
// Q4_K's mins (W = s * code - min) of tile t, group g, columns 8h..8h+7; zero for other layouts.
inline __m256 mins8(const Q4Matrix& w, int t, int g, int h) {
  return w.ksc ? k_product8(w.kdmin, w.kmin, t, g, h, w.n_groups) : _mm256_setzero_ps();
}
// The zero points of tile t (null for Q4_K, whose zero is the constant 0).
inline const uint8_t* tile_zeros(const Q4Matrix& w, int t) {
  return w.zeros ? w.zeros + size_t(t) * size_t(w.n_groups) * kQ4TileCols : nullptr;
}
// The zero points of group g, columns 8h..8h+7, in fp32.
inline __m256 zeros8f(const uint8_t* zp, int g, int h) {
  if (!zp) return _mm256_setzero_ps();
  const __m128i z = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + g * 16 + h * 8));
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(z));
}
// The negated zero points of tile t, group g, columns 8h..8h+7 (a constant when the matrix has one).
inline __m256i neg_zeros8(const Q4Matrix& w, const uint8_t* zp, int g, int h) {
  if (w.uniform_zero >= 0) return _mm256_set1_epi32(-w.uniform_zero);
  const __m256i z = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zp + g * 16 + h * 8)));
  return _mm256_sub_epi32(_mm256_setzero_si256(), z);
}
inline float half1(uint16_t h) { return _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h))); }
inline size_t super_index(const Q4Matrix& w, int t, int g, int c) {
  return (size_t(t) * size_t(w.n_groups / 8) + size_t(g / 8)) * kQ4TileCols + size_t(c);
}
inline float scale1(const Q4Matrix& w, int t, int g, int c) {
  const size_t i = (size_t(t) * size_t(w.n_groups) + size_t(g)) * kQ4TileCols + size_t(c);
  if (w.ksc) return half1(w.kd[super_index(w, t, g, c)]) * float(w.ksc[i]);
  if (w.scales_f32) return w.scales_f32[i];
  return half1(w.scales[i]);
}
inline float min1(const Q4Matrix& w, int t, int g, int c) {
  if (!w.ksc) return 0.0f;
  const size_t i = (size_t(t) * size_t(w.n_groups) + size_t(g)) * kQ4TileCols + size_t(c);
  return half1(w.kdmin[super_index(w, t, g, c)]) * float(w.kmin[i]);
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

// The 16 outputs of one row of a tile (acc[0]: columns 0-7, acc[1]: 8-15); the last tile may
// hold fewer than 16 valid columns.
inline void store_tile_row(float* y, const __m256 acc[2], int valid) {
  if (valid == kQ4TileCols) {
    _mm256_storeu_ps(y, acc[0]);
    _mm256_storeu_ps(y + 8, acc[1]);
    return;
  }
  alignas(32) float tmp[16];
  _mm256_store_ps(tmp, acc[0]);
  _mm256_store_ps(tmp + 8, acc[1]);
  std::memcpy(y, tmp, size_t(valid) * sizeof(float));
}

// Software prefetch distance in the weight stream: decode has little work per byte, so the core
// alone does not keep enough reads in flight (+10-20% read rate, bench/q4_bench M = 1).
constexpr size_t kPrefetchBytes = 2048;
// Decode's second, far prefetch into L2: more lines in flight (see q4_avx512.cpp).
constexpr size_t kFarPrefetchBytes = 8192;

// Decode: one activation row x one 16-column tile (memory-bound; batches use q8_tile_rows).
void q8_tile(const Q4Matrix& w, int t, const Q8Act& x, int m0, float* y, int64_t ldy) {
  constexpr int R = 1;
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
  const __m256i low = _mm256_set1_epi8(0x0F);
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 accf[R][2];
  for (int r = 0; r < R; ++r) accf[r][0] = accf[r][1] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    // The block's integer sums start at -zero * (activation sum): exactly the scalar twin's
    // isum - zero * sum, with no per-block subtraction (and no zero loads for a uniform zero).
    const int g = b / bpg;
    const __m256i nz0 = neg_zeros8(w, zp, g, 0), nz1 = neg_zeros8(w, zp, g, 1);
    __m256i acc[R][2];
    for (int r = 0; r < R; ++r) {
      const __m256i xsv = _mm256_set1_epi32(xs[r][b]);
      acc[r][0] = _mm256_mullo_epi32(nz0, xsv);
      acc[r][1] = _mm256_mullo_epi32(nz1, xsv);
    }
    const int k1 = (b + 1) * x.block;
    for (int k = b * x.block; k < k1; k += kQ4StepK) {
      _mm_prefetch(reinterpret_cast<const char*>(qs + size_t(k) * 8 + kPrefetchBytes), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(qs + size_t(k) * 8 + kFarPrefetchBytes), _MM_HINT_T2);
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
    const __m256 s0 = scales8(w, t, g, 0);
    const __m256 s1 = scales8(w, t, g, 1);
    for (int r = 0; r < R; ++r) {
      const __m256 dv = _mm256_set1_ps(xd[r][b]);
      const __m256 f0 = _mm256_cvtepi32_ps(acc[r][0]);
      const __m256 f1 = _mm256_cvtepi32_ps(acc[r][1]);
      accf[r][0] = _mm256_fmadd_ps(_mm256_mul_ps(s0, dv), f0, accf[r][0]);
      accf[r][1] = _mm256_fmadd_ps(_mm256_mul_ps(s1, dv), f1, accf[r][1]);
    }
    if (w.ksc) {  // - min x (the block's activation sum)
      const __m256 mn0 = mins8(w, t, g, 0), mn1 = mins8(w, t, g, 1);
      for (int r = 0; r < R; ++r) {
        const __m256 ds = _mm256_set1_ps(xd[r][b] * float(xs[r][b]));
        accf[r][0] = _mm256_fnmadd_ps(mn0, ds, accf[r][0]);
        accf[r][1] = _mm256_fnmadd_ps(mn1, ds, accf[r][1]);
      }
    }
  }
  const int n0 = t * kQ4TileCols, valid = std::min(kQ4TileCols, w.n - n0);
  for (int r = 0; r < R; ++r) store_tile_row(y + (m0 + r) * ldy + n0, accf[r], valid);
}

// Batches of rows (continuous-batching decode, prefill): the tile is walked once, block by block,
// and each group of up to 4 rows multiplies the block's weights while they sit in L1, so
// DRAM is read once per block rather than once per pass of a few rows. The int8 products of 4
// steps (32 k) are summed in int16 before widening: |x| <= 127 and codes <= 15 give at most
// 4 * 2 * 2 * 15 * 127 = 30480 per lane, and one vpmaddwd per 4 steps instead of per step
// relieves the multiply ports, which bound this loop.

// R = 2, 3 or 4 rows: the block's integer dot products, written in assembly because GCC spills the
// int16 sums of the intrinsics version to the stack. Registers: ymm0-7 sums (row r: ymm(2r) columns
// 0-7, ymm(2r+1) columns 8-15), ymm8-11 the step's unpacked codes (lo0, hi0, lo1, hi1), ymm12 the
// nibble mask, ymm13/14 the broadcast activations, ymm15 a product. acc is __m256i[R][2]; the asm
// sets it (steps >= 4, a multiple of 4).
#define MH_Q8_ROW(XL, XH, SA, SB)                 \
  "vpbroadcastd " XL ", %%ymm13\n\t"              \
  "vpbroadcastd " XH ", %%ymm14\n\t"              \
  "vpmaddubsw %%ymm13, %%ymm8, %%ymm15\n\t"       \
  "vpaddw %%ymm15, " SA ", " SA "\n\t"            \
  "vpmaddubsw %%ymm14, %%ymm9, %%ymm15\n\t"       \
  "vpaddw %%ymm15, " SA ", " SA "\n\t"            \
  "vpmaddubsw %%ymm13, %%ymm10, %%ymm15\n\t"      \
  "vpaddw %%ymm15, " SB ", " SB "\n\t"            \
  "vpmaddubsw %%ymm14, %%ymm11, %%ymm15\n\t"      \
  "vpaddw %%ymm15, " SB ", " SB "\n\t"
// The first step of a chunk writes its first products straight into the sums (no zeroing, no add).
#define MH_Q8_ROW_FIRST(XL, XH, SA, SB)           \
  "vpbroadcastd " XL ", %%ymm13\n\t"              \
  "vpbroadcastd " XH ", %%ymm14\n\t"              \
  "vpmaddubsw %%ymm13, %%ymm8, " SA "\n\t"        \
  "vpmaddubsw %%ymm14, %%ymm9, %%ymm15\n\t"       \
  "vpaddw %%ymm15, " SA ", " SA "\n\t"            \
  "vpmaddubsw %%ymm13, %%ymm10, " SB "\n\t"       \
  "vpmaddubsw %%ymm14, %%ymm11, %%ymm15\n\t"      \
  "vpaddw %%ymm15, " SB ", " SB "\n\t"
#define MH_Q8_WIDEN_SET(I, OFF)                      \
  "vpmaddwd %%ymm13, %%ymm" #I ", %%ymm" #I "\n\t" \
  "vmovdqu %%ymm" #I ", " #OFF "(%[acc])\n\t"
#define MH_Q8_WIDEN(I, OFF)                          \
  "vpmaddwd %%ymm13, %%ymm" #I ", %%ymm" #I "\n\t" \
  "vpaddd " #OFF "(%[acc]), %%ymm" #I ", %%ymm" #I "\n\t" \
  "vmovdqu %%ymm" #I ", " #OFF "(%[acc])\n\t"

alignas(32) constexpr uint8_t kNibbleMask[32] = {0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F,
                                                 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F,
                                                 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F, 0x0F};
alignas(32) constexpr int16_t kOnes16[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

// The step's codes: low and high nibbles of both 32-byte halves, masked to bytes.
#define MH_Q8_FROM_Q                      \
  "vmovdqu (%[q]), %%ymm8\n\t"            \
  "vmovdqu 32(%[q]), %%ymm10\n\t"         \
  "vpsrlw $4, %%ymm8, %%ymm9\n\t"         \
  "vpsrlw $4, %%ymm10, %%ymm11\n\t"       \
  "vpand %%ymm12, %%ymm8, %%ymm8\n\t"     \
  "vpand %%ymm12, %%ymm9, %%ymm9\n\t"     \
  "vpand %%ymm12, %%ymm10, %%ymm10\n\t"   \
  "vpand %%ymm12, %%ymm11, %%ymm11\n\t"
// The rows' operands: activations at x0 + r * ldx (row 3 at x3), sums as in the header.
#define MH_Q8_ROWS2(ROW)                                                       \
  ROW("(%[x0])", "4(%[x0])", "%%ymm0", "%%ymm1")                               \
  ROW("(%[x0],%[ldx],1)", "4(%[x0],%[ldx],1)", "%%ymm2", "%%ymm3")
#define MH_Q8_ROWS3(ROW)                                                       \
  MH_Q8_ROWS2(ROW)                                                             \
  ROW("(%[x0],%[ldx],2)", "4(%[x0],%[ldx],2)", "%%ymm4", "%%ymm5")
#define MH_Q8_ROWS4(ROW)                                                       \
  MH_Q8_ROWS3(ROW)                                                             \
  ROW("(%[x3])", "4(%[x3])", "%%ymm6", "%%ymm7")
// One step (8 k) for the rows with ROW (MH_Q8_ROW_FIRST or MH_Q8_ROW), then the pointers move on.
#define MH_Q8_STEP(ROWS, ROW)                                                  \
  MH_Q8_FROM_Q                                                                 \
  ROWS(ROW)                                                                    \
  "add $64, %[q]\n\t"                                                          \
  "add $8, %[x0]\n\t"                                                          \
  "add $8, %[x3]\n\t"
// One chunk of 4 steps into the int16 sums, then ymm13 = ones for the widening.
#define MH_Q8_CHUNK(ROWS)                                                      \
  MH_Q8_STEP(ROWS, MH_Q8_ROW_FIRST)                                            \
  ".rept 3\n\t"                                                                \
  MH_Q8_STEP(ROWS, MH_Q8_ROW)                                                  \
  ".endr\n\t"                                                                  \
  "vmovdqa %[ones], %%ymm13\n\t"
#define MH_Q8_SET2 MH_Q8_WIDEN_SET(0, 0) MH_Q8_WIDEN_SET(1, 32) MH_Q8_WIDEN_SET(2, 64) MH_Q8_WIDEN_SET(3, 96)
#define MH_Q8_SET3 MH_Q8_SET2 MH_Q8_WIDEN_SET(4, 128) MH_Q8_WIDEN_SET(5, 160)
#define MH_Q8_SET4 MH_Q8_SET3 MH_Q8_WIDEN_SET(6, 192) MH_Q8_WIDEN_SET(7, 224)
#define MH_Q8_ADD2 MH_Q8_WIDEN(0, 0) MH_Q8_WIDEN(1, 32) MH_Q8_WIDEN(2, 64) MH_Q8_WIDEN(3, 96)
#define MH_Q8_ADD3 MH_Q8_ADD2 MH_Q8_WIDEN(4, 128) MH_Q8_WIDEN(5, 160)
#define MH_Q8_ADD4 MH_Q8_ADD3 MH_Q8_WIDEN(6, 192) MH_Q8_WIDEN(7, 224)
// The first chunk stores the widened sums to acc, later chunks add to them: no zeroing pass.
#define MH_Q8_BLOCK(ROWS, SET, ADD) \
  "vmovdqa %[low], %%ymm12\n\t"    \
  MH_Q8_CHUNK(ROWS)                 \
  SET                               \
  "dec %[n]\n\t"                    \
  "jz 2f\n\t"                       \
  "1:\n\t"                          \
  MH_Q8_CHUNK(ROWS)                 \
  ADD                               \
  "dec %[n]\n\t"                    \
  "jnz 1b\n\t"                      \
  "2:\n\t"
#define MH_Q8_ASM(ROWS, SET, ADD)                                                                      \
  __asm__ volatile(MH_Q8_BLOCK(ROWS, SET, ADD)                                                         \
                   : [q] "+r"(q), [x0] "+r"(xk), [x3] "+r"(x3), [n] "+r"(chunks)                       \
                   : [ldx] "r"(ldx), [acc] "r"(&acc[0][0]), [low] "m"(kNibbleMask), [ones] "m"(kOnes16) \
                   : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10",   \
                     "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc")
// Five rows do not fit the layout above (10 sums + 4 codes + 3 scratch > 16 registers), so a
// 5-row step takes one 32-byte column half at a time: ymm0-9 sums (row r: ymm(2r) columns 0-7,
// ymm(2r+1) columns 8-15), ymm10/11 the half's low and high nibbles, ymm12 the mask, ymm13/14
// the activations (broadcast once per half), ymm15 a product. One unpack per step serves all
// five rows, where 3 + 2 groups unpack twice.
#define MH_Q8_HROW(XL, XH, S)                     \
  "vpbroadcastd " XL ", %%ymm13\n\t"              \
  "vpbroadcastd " XH ", %%ymm14\n\t"              \
  "vpmaddubsw %%ymm13, %%ymm10, %%ymm15\n\t"      \
  "vpaddw %%ymm15, " S ", " S "\n\t"              \
  "vpmaddubsw %%ymm14, %%ymm11, %%ymm15\n\t"      \
  "vpaddw %%ymm15, " S ", " S "\n\t"
#define MH_Q8_HROW_FIRST(XL, XH, S)               \
  "vpbroadcastd " XL ", %%ymm13\n\t"              \
  "vpbroadcastd " XH ", %%ymm14\n\t"              \
  "vpmaddubsw %%ymm13, %%ymm10, " S "\n\t"        \
  "vpmaddubsw %%ymm14, %%ymm11, %%ymm15\n\t"      \
  "vpaddw %%ymm15, " S ", " S "\n\t"
#define MH_Q8_HALF(OFF, ROW, S0, S1, S2, S3, S4)                  \
  "vmovdqu " OFF "(%[q]), %%ymm10\n\t"                            \
  "vpsrlw $4, %%ymm10, %%ymm11\n\t"                               \
  "vpand %%ymm12, %%ymm10, %%ymm10\n\t"                           \
  "vpand %%ymm12, %%ymm11, %%ymm11\n\t"                           \
  ROW("(%[x0])", "4(%[x0])", S0)                                  \
  ROW("(%[x0],%[ldx],1)", "4(%[x0],%[ldx],1)", S1)                \
  ROW("(%[x0],%[ldx],2)", "4(%[x0],%[ldx],2)", S2)                \
  ROW("(%[x3])", "4(%[x3])", S3)                                  \
  ROW("(%[x3],%[ldx],1)", "4(%[x3],%[ldx],1)", S4)
#define MH_Q8_ROWS5(ROW)                                                         \
  MH_Q8_HALF("0", ROW, "%%ymm0", "%%ymm2", "%%ymm4", "%%ymm6", "%%ymm8")        \
  MH_Q8_HALF("32", ROW, "%%ymm1", "%%ymm3", "%%ymm5", "%%ymm7", "%%ymm9")
#define MH_Q8_STEP5(ROW)      \
  MH_Q8_ROWS5(ROW)            \
  "add $64, %[q]\n\t"         \
  "add $8, %[x0]\n\t"         \
  "add $8, %[x3]\n\t"
#define MH_Q8_CHUNK5                \
  MH_Q8_STEP5(MH_Q8_HROW_FIRST)     \
  ".rept 3\n\t"                     \
  MH_Q8_STEP5(MH_Q8_HROW)           \
  ".endr\n\t"                       \
  "vmovdqa %[ones], %%ymm13\n\t"
#define MH_Q8_SET5 MH_Q8_SET4 MH_Q8_WIDEN_SET(8, 256) MH_Q8_WIDEN_SET(9, 288)
#define MH_Q8_ADD5 MH_Q8_ADD4 MH_Q8_WIDEN(8, 256) MH_Q8_WIDEN(9, 288)
#define MH_Q8_BLOCK5         \
  "vmovdqa %[low], %%ymm12\n\t" \
  MH_Q8_CHUNK5               \
  MH_Q8_SET5                 \
  "dec %[n]\n\t"             \
  "jz 2f\n\t"                \
  "1:\n\t"                   \
  MH_Q8_CHUNK5               \
  MH_Q8_ADD5                 \
  "dec %[n]\n\t"             \
  "jnz 1b\n\t"               \
  "2:\n\t"
// Every row group unpacks the codes itself: keeping the first group's unpacked codes in a
// scratch buffer for the next groups ran 4-15% slower (the stores and reloads cost more than the
// shift and masks they save).
template <int R>
inline void q8_block_rows(const uint8_t* q, int steps, const int8_t* xk, size_t ldx, __m256i (*acc)[2]) {
  static_assert(R >= 2 && R <= 5);
  const int8_t* x3 = xk + (R >= 4 ? 3 * ldx : 0);
  size_t chunks = size_t(steps) / 4;
  if constexpr (R == 5)
    __asm__ volatile(MH_Q8_BLOCK5
                     : [q] "+r"(q), [x0] "+r"(xk), [x3] "+r"(x3), [n] "+r"(chunks)
                     : [ldx] "r"(ldx), [acc] "r"(&acc[0][0]), [low] "m"(kNibbleMask), [ones] "m"(kOnes16)
                     : "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11",
                       "xmm12", "xmm13", "xmm14", "xmm15", "memory", "cc");
  if constexpr (R == 4) MH_Q8_ASM(MH_Q8_ROWS4, MH_Q8_SET4, MH_Q8_ADD4);
  if constexpr (R == 3) MH_Q8_ASM(MH_Q8_ROWS3, MH_Q8_SET3, MH_Q8_ADD3);
  if constexpr (R == 2) MH_Q8_ASM(MH_Q8_ROWS2, MH_Q8_SET2, MH_Q8_ADD2);
}
#undef MH_Q8_FROM_Q
#undef MH_Q8_ROW
#undef MH_Q8_ROW_FIRST
#undef MH_Q8_WIDEN
#undef MH_Q8_WIDEN_SET
#undef MH_Q8_CHUNK
#undef MH_Q8_STEP
#undef MH_Q8_ROWS2
#undef MH_Q8_ROWS3
#undef MH_Q8_ROWS4
#undef MH_Q8_SET2
#undef MH_Q8_SET3
#undef MH_Q8_SET4
#undef MH_Q8_ADD2
#undef MH_Q8_ADD3
#undef MH_Q8_ADD4
#undef MH_Q8_BLOCK
#undef MH_Q8_ASM
#undef MH_Q8_HROW
#undef MH_Q8_HROW_FIRST
#undef MH_Q8_HALF
#undef MH_Q8_ROWS5
#undef MH_Q8_STEP5
#undef MH_Q8_CHUNK5
#undef MH_Q8_SET5
#undef MH_Q8_ADD5
#undef MH_Q8_BLOCK5

// Rows per q8_tile_rows call: its fp32 accumulators live in a stack array of this many rows. 16
// rather than 64: a pass's activations (16 x kp bytes) stay in L1/L2 while the tile is walked
// (prefill at blocks of 32: 96-110 -> 120 G multiply-adds/s, bench/RESULTS.md issue 17).
constexpr int kRowsPerPass = 16;

void q8_tile_rows(const Q4Matrix& w, int t, const Q8Act& x, int M, float* y, int64_t ldy, __m256 (*accf)[2]) {
  const uint8_t* qs = w.qs + size_t(t) * tile_bytes(w);
  const uint8_t* zp = tile_zeros(w, t);
  const int nb = w.kp / x.block, bpg = w.gs / x.block, steps = x.block / kQ4StepK;
  // Integer sums of the block for every row. They are scaled after all row groups have run: a
  // scaling step right behind each group's assembly ran 2-3% slower (one thread, M = 4 and 8).
  alignas(32) __m256i acc[kRowsPerPass][2];
  for (int m = 0; m < M; ++m) accf[m][0] = accf[m][1] = _mm256_setzero_ps();
  for (int b = 0; b < nb; ++b) {
    const uint8_t* q = qs + size_t(b) * size_t(steps) * kQ4StepBytes;
    for (int i = 0; i < steps; ++i) _mm_prefetch(reinterpret_cast<const char*>(q + kPrefetchBytes + i * 64), _MM_HINT_T0);
    // Groups of 4 rows; a remainder of 5 runs as one group of 5, so no group has one row (M >= 2).
    for (int m = 0; m < M;) {
      const int rest = M - m, take = rest == 5 ? 5 : std::min(rest, 4);
      const int8_t* xk = x.q + size_t(m) * x.kp + size_t(b) * x.block;
      if (take == 5) q8_block_rows<5>(q, steps, xk, size_t(x.kp), acc + m);
      if (take == 4) q8_block_rows<4>(q, steps, xk, size_t(x.kp), acc + m);
      if (take == 3) q8_block_rows<3>(q, steps, xk, size_t(x.kp), acc + m);
      if (take == 2) q8_block_rows<2>(q, steps, xk, size_t(x.kp), acc + m);
      m += take;
    }
    const int g = b / bpg;
    const __m256 zf[2] = {_mm256_cvtepi32_ps(neg_zeros8(w, zp, g, 0)), _mm256_cvtepi32_ps(neg_zeros8(w, zp, g, 1))};
    const __m256 s[2] = {scales8(w, t, g, 0), scales8(w, t, g, 1)};
    // Exact in fp32: |acc| and zero * sum stay below 2^24 for blocks of up to 128.
    for (int r = 0; r < M; ++r) {
      const size_t bi = size_t(r) * size_t(nb) + size_t(b);
      const __m256 xsv = _mm256_set1_ps(float(x.sum[bi]));
      const __m256 dv = _mm256_set1_ps(x.d[bi]);
      for (int h = 0; h < 2; ++h) {
        const __m256 f = _mm256_fmadd_ps(zf[h], xsv, _mm256_cvtepi32_ps(acc[r][h]));  // zf holds -zero
        accf[r][h] = _mm256_fmadd_ps(_mm256_mul_ps(s[h], dv), f, accf[r][h]);
      }
    }
    if (w.ksc) {  // Q4_K: - min x (the block's activation sum)
      const __m256 mn[2] = {mins8(w, t, g, 0), mins8(w, t, g, 1)};
      for (int r = 0; r < M; ++r) {
        const size_t bi = size_t(r) * size_t(nb) + size_t(b);
        const __m256 ds = _mm256_set1_ps(x.d[bi] * float(x.sum[bi]));
        for (int h = 0; h < 2; ++h) accf[r][h] = _mm256_fnmadd_ps(mn[h], ds, accf[r][h]);
      }
    }
  }
  const int n0 = t * kQ4TileCols, valid = std::min(kQ4TileCols, w.n - n0);
  for (int m = 0; m < M; ++m) store_tile_row(y + m * ldy + n0, accf[m], valid);
}

void gemm_q8(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  alignas(32) __m256 accf[kRowsPerPass][2];
  for (int m0 = 0; m0 < M; m0 += kRowsPerPass) {
    const int rows = std::min(kRowsPerPass, M - m0);
    if (rows == 1) {  // decode, or the last row of a large batch
      for (int t = t0; t < t1; ++t) q8_tile(w, t, x, m0, y, ldy);
      continue;
    }
    const Q8Act xs{x.q + size_t(m0) * x.kp, x.d + size_t(m0) * (x.kp / x.block), x.sum + size_t(m0) * (x.kp / x.block),
                   x.kp, x.block};
    for (int t = t0; t < t1; ++t) q8_tile_rows(w, t, xs, rows, y + m0 * ldy, ldy, accf);
  }
}

// R rows x one tile, fp32 activations. Two accumulators per (row, half): low and high nibble planes.
template <int R>
void f32_tile(const Q4Matrix& w, int t, const F32Act& x, int m0, float* y, int64_t ldy) {
  const uint8_t* qs = w.qs + size_t(t) * tile_bytes(w);
  const uint8_t* zp = tile_zeros(w, t);
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
    const __m256 z0 = zeros8f(zp, g, 0), z1 = zeros8f(zp, g, 1);
    const __m256 s0 = scales8(w, t, g, 0), s1 = scales8(w, t, g, 1);
    const __m256 mn0 = mins8(w, t, g, 0), mn1 = mins8(w, t, g, 1);  // Q4_K: W = s * code - min
    for (int r = 0; r < R; ++r) {
      const __m256 gs = _mm256_set1_ps(x.gsum[size_t(m0 + r) * x.n_groups + size_t(g)]);
      const __m256 t0 = _mm256_fnmadd_ps(z0, gs, _mm256_add_ps(a[r][0][0], a[r][0][1]));
      const __m256 t1 = _mm256_fnmadd_ps(z1, gs, _mm256_add_ps(a[r][1][0], a[r][1][1]));
      accf[r][0] = _mm256_fnmadd_ps(mn0, gs, _mm256_fmadd_ps(s0, t0, accf[r][0]));
      accf[r][1] = _mm256_fnmadd_ps(mn1, gs, _mm256_fmadd_ps(s1, t1, accf[r][1]));
    }
  }
  const int n0 = t * kQ4TileCols, valid = std::min(kQ4TileCols, w.n - n0);
  for (int r = 0; r < R; ++r) store_tile_row(y + (m0 + r) * ldy + n0, accf[r], valid);
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
    const uint8_t* qs = w.qs + size_t(t) * tile_bytes(w);
    const uint8_t* zp = tile_zeros(w, t);
    for (int c = 0; c < kQ4TileCols; ++c) {
      float* row = out + (size_t(t - t0) * kQ4TileCols + size_t(c)) * size_t(w.kp);
      const uint8_t* col = qs + size_t(c / 8) * 32 + size_t(c % 8) * 4;
      for (int g = 0; g < w.n_groups; ++g) {
        const __m256 s = _mm256_set1_ps(scale1(w, t, g, c));
        const __m256 z = _mm256_set1_ps(zp ? float(zp[g * 16 + c]) : 0.0f);
        const __m256 mn = _mm256_set1_ps(min1(w, t, g, c));
        for (int k = g * w.gs; k < (g + 1) * w.gs; k += kQ4StepK) {
          int32_t word;
          std::memcpy(&word, col + size_t(k) * 8, 4);
          const __m256i q = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(word), shifts), low);
          _mm256_storeu_ps(row + k, _mm256_sub_ps(_mm256_mul_ps(s, _mm256_sub_ps(_mm256_cvtepi32_ps(q), z)), mn));
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
