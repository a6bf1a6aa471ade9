// AMX int4 x int8 product (layout in q4.h): the prefill gemm_q8 on tile registers. TDPBSSD
// multiplies a 16-row x 64-byte A tile (int8 activations, 64 k) by a 16-row x 64-byte B tile (16
// columns x 4 k per row, the VNNI shape) into 16 x 16 int32 in one instruction.
//
// The low nibbles of one 64-byte step are exactly one B row (16 columns x k 8o..8o+3), the high
// nibbles the next (k 8o+4..8o+7), so a chunk of steps unpacks into B rows in natural k order with
// one and/shift per nibble; the zero point is subtracted while unpacking (codes - zero fit int8),
// so a block's C tile is already sum_k q[m][k] * (code - zero) and needs only one scale product
// per block: y += d[m][b] * s[g][n] * C. Unpacked B is reused by every row of the pass.
//
// Tiles: 0-3 C (2 A row blocks x 2 B column tiles), 4-5 A (16 rows x kb bytes), 6-7 B (kb/4 rows x
// 64 bytes); kb = 64, or 32 for 32-value activation blocks. The tile configuration is per thread:
// every call loads it. Compiled with -mamx-tile -mamx-int8 and the AVX-512 flags; only called
// where amx_supported() (kernels/isa.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/q4.h"

namespace metharme::kernels {

namespace {

// Working set, all in the 2 MiB L2 of a Sapphire Rapids core: fp32 sums of a pass (256 rows x 32
// tiles x 16 x 4 = 512 KiB), its packed A chunk (256 x 1024 = 256 KiB), one unpacked B panel
// (8 tiles x 1024 x 16 = 128 KiB).
constexpr int kPassRows = 256;  // rows per pass, a multiple of 32
constexpr int kSpanTiles = 32;  // 16-column tiles whose sums stay in the pass's buffer
constexpr int kPanelTiles = 8;  // tiles unpacked together
constexpr int kChunkK = 1024;   // k per chunk (whole blocks)

inline size_t tile_bytes(const Q4Matrix& w) { return size_t(w.kp) / kQ4StepK * kQ4StepBytes; }

inline __m512 scales16(const Q4Matrix& w, int t, int g) {
  const size_t i = (size_t(t) * size_t(w.n_groups) + size_t(g)) * kQ4TileCols;
  if (w.scales_f32) return _mm512_loadu_ps(w.scales_f32 + i);
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w.scales + i)));
}

// The 64-byte LDTILECFG operand (palette 1).
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64);

void configure(int kb) {
  TileConfig c;
  for (int i = 0; i < 4; ++i) c.rows[i] = 16, c.colsb[i] = 64;
  for (int i = 4; i < 6; ++i) c.rows[i] = 16, c.colsb[i] = uint16_t(kb);
  for (int i = 6; i < 8; ++i) c.rows[i] = uint8_t(kb / 4), c.colsb[i] = 64;
  // GCC 12's _tile_loadconfig names only 8 bytes of its operand as read, so the stores to the rest
  // were dropped as dead: make the whole object visible first.
  __asm__ volatile("" : : "r"(&c) : "memory");
  _tile_loadconfig(&c);
}

// B of tiles [t, t + nt), k in [k0, k0 + kc): out[j][(k - k0) / 4][16 columns x 4 k], code - zero.
void unpack(const Q4Matrix& w, int t, int nt, int k0, int kc, int8_t* out) {
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (int j = 0; j < nt; ++j) {
    const uint8_t* qs = w.qs + size_t(t + j) * tile_bytes(w);
    const uint8_t* zp = w.zeros + size_t(t + j) * size_t(w.n_groups) * kQ4TileCols;
    int8_t* o = out + size_t(j) * size_t(kc) * kQ4TileCols;
    int g = -1;
    __m512i z = _mm512_setzero_si512();
    for (int k = k0; k < k0 + kc; k += kQ4StepK) {
      if (k / w.gs != g) {  // the group's zero point in each byte of its column's lane
        g = k / w.gs;
        const __m128i z8 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(zp + size_t(g) * kQ4TileCols));
        z = _mm512_mullo_epi32(_mm512_cvtepu8_epi32(z8), _mm512_set1_epi32(0x01010101));
      }
      const __m512i v = _mm512_loadu_si512(qs + size_t(k) * 8);
      const __m512i lo = _mm512_sub_epi8(_mm512_and_si512(v, low), z);
      const __m512i hi = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(v, 4), low), z);
      _mm512_storeu_si512(o + size_t(k - k0) * 16, lo);
      _mm512_storeu_si512(o + size_t(k - k0) * 16 + 64, hi);
    }
  }
}

// c[NA][NB][16][16] = A (NA x 16 rows, stride lda) x B (NB tiles, bstride apart) over nsub x kb k.
template <int NA, int NB>
void tile_block(const int8_t* a, int64_t lda, const int8_t* b, size_t bstride, int kb, int nsub, int32_t* c) {
  _tile_zero(0);
  if (NB > 1) _tile_zero(1);
  if (NA > 1) _tile_zero(2);
  if (NA > 1 && NB > 1) _tile_zero(3);
  for (int s = 0; s < nsub; ++s) {
    _tile_loadd(4, a + s * kb, lda);
    if (NA > 1) _tile_loadd(5, a + 16 * lda + s * kb, lda);
    _tile_loadd(6, b + size_t(s) * size_t(kb) * 16, 64);
    if (NB > 1) _tile_loadd(7, b + bstride + size_t(s) * size_t(kb) * 16, 64);
    _tile_dpbssd(0, 4, 6);
    if (NB > 1) _tile_dpbssd(1, 4, 7);
    if (NA > 1) _tile_dpbssd(2, 5, 6);
    if (NA > 1 && NB > 1) _tile_dpbssd(3, 5, 7);
  }
  _tile_stored(0, c, 64);
  if (NB > 1) _tile_stored(1, c + 256, 64);
  if (NA > 1) _tile_stored(2, c + 512, 64);
  if (NA > 1 && NB > 1) _tile_stored(3, c + 768, 64);
}

// One pass: rows [r0, r0 + rows) x the panel's tiles [p0, p0 + np); fp32 sums in acc[row][stride]
// (the panel's first column at acc[0]).
struct Pass {
  const Q4Matrix& w;
  const Q8Act& x;
  int r0, rows, p0, np, kb, stride;
  float* acc;
  const int8_t* bbuf;   // unpack(): [np][kc / 4][64]
  const int8_t* apack;  // pack_a(): [rows / 32][b - b0][32][block]
};

// C of rows mb.. (mrows) x tiles j, j+1 (nbt) for block b, added to acc with its scales.
// Inlined: as a call it kept the loop state on the stack.
__attribute__((always_inline)) inline void post(const Pass& p, const int32_t* c, int mb, int mrows, int j, int nbt,
                                                int b) {
  const int nb = p.w.kp / p.x.block, g = b / (p.w.gs / p.x.block);
  __m512 s[2];
  for (int i = 0; i < nbt; ++i) s[i] = scales16(p.w, p.p0 + j + i, g);
  for (int r = 0; r < mrows; ++r) {
    const __m512 d = _mm512_set1_ps(p.x.d[size_t(p.r0 + mb + r) * size_t(nb) + size_t(b)]);
    float* ac = p.acc + size_t(mb + r) * size_t(p.stride) + size_t(j) * kQ4TileCols;
    const int32_t* cr = c + (r / 16) * 512 + (r % 16) * 16;
    for (int i = 0; i < nbt; ++i) {
      const __m512 f = _mm512_cvtepi32_ps(_mm512_loadu_si512(cr + 256 * i));
      _mm512_storeu_ps(ac + 16 * i, _mm512_fmadd_ps(_mm512_mul_ps(s[i], d), f, _mm512_loadu_ps(ac + 16 * i)));
    }
  }
}

// Rows [r0, r0 + rows) of blocks [b0, b1) as out[m / 32][b - b0][32][block], rows past the end
// zero: tile loads then read contiguous lines (rows kp apart would all share one L1 set).
void pack_a(const Q8Act& x, int r0, int rows, int b0, int b1, int8_t* out) {
  const int block = x.block, kc = (b1 - b0) * block;
  for (int mb = 0; mb < rows; mb += 32)
    for (int r = 0; r < 32; ++r) {
      int8_t* o = out + size_t(mb) * size_t(kc) + size_t(r) * size_t(block);
      const int8_t* src = x.q + size_t(r0 + mb + r) * size_t(x.kp) + size_t(b0) * size_t(block);
      const bool zero = mb + r >= rows;
      for (int b = 0; b < b1 - b0; ++b)
        for (int i = 0; i < block; i += 32) {
          const __m256i v =
              zero ? _mm256_setzero_si256() : _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + b * block + i));
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(o + size_t(b) * 32 * size_t(block) + size_t(i)), v);
        }
    }
}

template <int NA, int NB>
void tile_pair(const Pass& p, int mb, int mrows, int j, int b0, int b1) {
  const int block = p.x.block, kc = (b1 - b0) * block, nsub = block / p.kb;
  const size_t bstride = size_t(kc) * kQ4TileCols;
  const int8_t* a = p.apack + size_t(mb) * size_t(kc);
  // Two C buffers: block b's tile products run while block b - 1 is scaled into acc.
  alignas(64) int32_t c[2][4 * 256];
  for (int b = b0; b < b1; ++b) {
    const int8_t* ab = a + size_t(b - b0) * 32 * size_t(block);
    const int8_t* bb = p.bbuf + size_t(j) * bstride + size_t(b - b0) * size_t(block) * 16;
    tile_block<NA, NB>(ab, block, bb, bstride, p.kb, nsub, c[b & 1]);
    if (b > b0) post(p, c[(b - 1) & 1], mb, mrows, j, NB, b - 1);
  }
  post(p, c[(b1 - 1) & 1], mb, mrows, j, NB, b1 - 1);
}

// Blocks [b0, b1) of the pass, A packed and B unpacked.
void run_chunk(const Pass& p, int b0, int b1) {
  for (int mb = 0; mb < p.rows; mb += 32) {
    const int mrows = std::min(32, p.rows - mb);
    for (int j = 0; j < p.np; j += 2) {
      const int nbt = std::min(2, p.np - j);
      if (mrows > 16) {
        if (nbt > 1)
          tile_pair<2, 2>(p, mb, mrows, j, b0, b1);
        else
          tile_pair<2, 1>(p, mb, mrows, j, b0, b1);
      } else {
        if (nbt > 1)
          tile_pair<1, 2>(p, mb, mrows, j, b0, b1);
        else
          tile_pair<1, 1>(p, mb, mrows, j, b0, b1);
      }
    }
  }
}

// Tiles [s0, s0 + ns), rows [r0, r0 + rows): every chunk of k packs A once for all its panels.
void run_span(const Q4Matrix& w, const Q8Act& x, int r0, int rows, int s0, int ns, float* acc, int8_t* bbuf,
              int8_t* apack) {
  const int nb = w.kp / x.block, bpc = std::max(1, kChunkK / x.block), stride = ns * kQ4TileCols;
  const int kb = x.block % 64 == 0 ? 64 : 32;
  std::fill(acc, acc + size_t(rows) * size_t(stride), 0.0f);
  for (int b0 = 0; b0 < nb; b0 += bpc) {
    const int b1 = std::min(nb, b0 + bpc);
    pack_a(x, r0, rows, b0, b1, apack);
    for (int p0 = s0; p0 < s0 + ns; p0 += kPanelTiles) {
      const int np = std::min(kPanelTiles, s0 + ns - p0);
      unpack(w, p0, np, b0 * x.block, (b1 - b0) * x.block, bbuf);
      const Pass p{w, x, r0, rows, p0, np, kb, stride, acc + size_t(p0 - s0) * kQ4TileCols, bbuf, apack};
      run_chunk(p, b0, b1);
    }
  }
}

void gemm_q8(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  if (M <= 0 || t0 >= t1) return;
  const int kc_max = std::max(1, kChunkK / x.block) * x.block;
  thread_local std::vector<float> acc;
  thread_local std::vector<int8_t> bbuf, apack;
  acc.resize(size_t(kPassRows) * kSpanTiles * kQ4TileCols);
  bbuf.resize(size_t(kPanelTiles) * size_t(kc_max) * kQ4TileCols);
  apack.resize(size_t(kPassRows) * size_t(kc_max));
  configure(x.block % 64 == 0 ? 64 : 32);
  for (int s0 = t0; s0 < t1; s0 += kSpanTiles) {
    const int ns = std::min(kSpanTiles, t1 - s0), stride = ns * kQ4TileCols;
    for (int r0 = 0; r0 < M; r0 += kPassRows) {
      const int rows = std::min(kPassRows, M - r0);
      run_span(w, x, r0, rows, s0, ns, acc.data(), bbuf.data(), apack.data());
      for (int j = 0; j < ns; ++j) {
        const int n0 = (s0 + j) * kQ4TileCols, valid = std::min(kQ4TileCols, w.n - n0);
        const __mmask16 mask = __mmask16((1u << valid) - 1u);
        for (int r = 0; r < rows; ++r)
          _mm512_mask_storeu_ps(y + int64_t(r0 + r) * ldy + n0, mask,
                                _mm512_loadu_ps(acc.data() + size_t(r) * size_t(stride) + size_t(j) * kQ4TileCols));
      }
    }
  }
  _tile_release();
}

}  // namespace

Q4GemmQ8 q4_gemm_q8_amx_unchecked() { return gemm_q8; }

}  // namespace metharme::kernels
