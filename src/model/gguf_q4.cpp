#include "model/gguf_q4.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme {

namespace {

using kernels::kQ4StepBytes;
using kernels::kQ4TileCols;

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// The 32 codes of block g of a row: Q4_0 (18 bytes: d, 16 bytes) and Q4_1 (20: d, m, 16) hold
// values l and l + 16 in the low and high nibbles of byte l; Q4_K (144 bytes per 256: d, dmin,
// 12 scale bytes, 128 code bytes) holds sub-blocks 2j and 2j + 1 in the nibbles of 32 bytes.
void block_codes(GgmlType t, const uint8_t* row, int g, uint8_t* code) {
  if (t == GgmlType::kQ4_K) {
    const int j = g % 8;
    const uint8_t* qs = row + size_t(g / 8) * 144 + 16 + 32 * (j / 2);
    const int shift = 4 * (j % 2);
    for (int l = 0; l < 32; ++l) code[l] = uint8_t((qs[l] >> shift) & 15);
    return;
  }
  const uint8_t* qs = row + size_t(g) * (t == GgmlType::kQ4_1 ? 20 : 18) + (t == GgmlType::kQ4_1 ? 4 : 2);
  for (int l = 0; l < 16; ++l) code[l] = qs[l] & 15, code[l + 16] = uint8_t(qs[l] >> 4);
}

// Column c's codes for rows 32g..32g+31 into its tile (layout in kernels/q4.h): in step o (rows
// 8o..8o+7) byte i of the column's four holds row 8o+i in the low nibble and 8o+4+i in the high.
void put_codes(uint8_t* tile, int c, int g, const uint8_t* code) {
  for (int s = 0; s < 4; ++s) {
    uint8_t* p = tile + size_t(4 * g + s) * kQ4StepBytes + size_t(c / 8) * 32 + size_t(c % 8) * 4;
    for (int i = 0; i < 4; ++i) p[i] = uint8_t(code[8 * s + i] | (code[8 * s + 4 + i] << 4));
  }
}

// The per-block numbers of the three types, in the layouts of ops::Q4Weight.
struct Tables {
  std::vector<uint16_t> scales;     // Q4_0, Q4_1: d [n_tiles][G][16]
  std::vector<uint8_t> zeros;       // Q4_0: 8; Q4_1: nearest to -m/d
  std::vector<float> offsets;       // Q4_1: m + d*z [N][G]
  std::vector<uint8_t> ksc, kmin;   // Q4_K [n_tiles][G][16]
  std::vector<uint16_t> kd, kdmin;  // Q4_K [n_tiles][G/8][16]
};

// Block g of row n (column c of tile t): its scale numbers. False when one is not finite.
bool put_scales(GgmlType type, const uint8_t* row, int n, int t, int c, int g, int G, Tables& tb) {
  const size_t cell = (size_t(t) * size_t(G) + size_t(g)) * kQ4TileCols + size_t(c);
  if (type == GgmlType::kQ4_K) {
    const uint8_t* b = row + size_t(g / 8) * 144;
    if (g % 8 == 0) {
      const size_t si = (size_t(t) * size_t(G / 8) + size_t(g / 8)) * kQ4TileCols + size_t(c);
      tb.kd[si] = load_u16(b);
      tb.kdmin[si] = load_u16(b + 2);
      if (!std::isfinite(fp16_to_f32(tb.kd[si])) || !std::isfinite(fp16_to_f32(tb.kdmin[si]))) return false;
    }
    ggml_k4_scale_min(g % 8, b + 4, &tb.ksc[cell], &tb.kmin[cell]);
    return true;
  }
  const uint8_t* b = row + size_t(g) * (type == GgmlType::kQ4_1 ? 20 : 18);
  tb.scales[cell] = load_u16(b);
  const float d = fp16_to_f32(tb.scales[cell]);
  if (!std::isfinite(d)) return false;
  if (type == GgmlType::kQ4_0) return true;
  // Q4_1: w = d*q + m = d*(q - z) + (m + d*z); the kernels apply the integer z exactly.
  const float m = fp16_to_f32(load_u16(b + 2));
  if (!std::isfinite(m)) return false;
  const float zf = d != 0 ? std::nearbyint(-m / d) : 0.0f;
  const int z = std::isfinite(zf) ? int(std::clamp(zf, 0.0f, 15.0f)) : 0;
  tb.zeros[cell] = uint8_t(z);
  tb.offsets[size_t(n) * size_t(G) + size_t(g)] = m + d * float(z);
  return true;
}

}  // namespace

bool gguf_q4_type(GgmlType t) { return t == GgmlType::kQ4_0 || t == GgmlType::kQ4_1 || t == GgmlType::kQ4_K; }

ops::Linear gguf_q4_linear(const GgufTensorInfo& t, int N, int K, int qk_head_dim, ThreadPool& pool,
                           const std::string& file) {
  // The reader checked that K is a whole number of blocks (32; Q4_K 256) and nbytes = N rows.
  const int G = K / 32, T = (N + kQ4TileCols - 1) / kQ4TileCols;
  const size_t row_bytes = t.nbytes / size_t(N), cells = size_t(T) * size_t(G) * kQ4TileCols;
  auto w = std::make_shared<ops::Q4Weight>();
  w->n_out = N;
  w->n_in = K;
  w->group_size = 32;
  w->block = 32;
  kernels::Q4Matrix& m = w->mat;
  m.n = N;
  m.kp = K;
  m.gs = 32;
  m.n_groups = G;
  m.n_tiles = T;
  w->qs = PageBuffer(size_t(T) * m.tile_qs_bytes());  // zeroed: padding columns have code 0
  w->qs.advise_huge_pages();
  Tables tb;
  if (t.type == GgmlType::kQ4_K) {
    tb.ksc.assign(cells, 0);
    tb.kmin.assign(cells, 0);
    tb.kd.assign(cells / 8, 0);
    tb.kdmin.assign(cells / 8, 0);
  } else {
    tb.scales.assign(cells, 0);
    tb.zeros.assign(cells, t.type == GgmlType::kQ4_0 ? 8 : 0);
    if (t.type == GgmlType::kQ4_1) tb.offsets.assign(size_t(N) * size_t(G), 0.0f);
  }
  std::atomic<int> bad_row{-1};
  pool.parallel_for(T, 1, [&](int64_t t0, int64_t t1, int) {
    uint8_t code[32];
    for (int ti = int(t0); ti < int(t1); ++ti) {
      uint8_t* tile = w->qs.data() + size_t(ti) * m.tile_qs_bytes();
      for (int c = 0; c < kQ4TileCols && ti * kQ4TileCols + c < N; ++c) {
        const int n = ti * kQ4TileCols + c, src = qk_head_dim ? hf_qk_row_to_gguf(n, qk_head_dim) : n;
        const uint8_t* row = t.data + size_t(src) * row_bytes;
        for (int g = 0; g < G; ++g) {
          if (!put_scales(t.type, row, n, ti, c, g, G, tb)) bad_row = src;
          block_codes(t.type, row, g, code);
          put_codes(tile, c, g, code);
        }
      }
    }
  });
  if (bad_row >= 0)
    fail(file, ": tensor '", t.name, "' row ", int(bad_row),
         " has a block scale, min or offset that is not a finite number");
  m.qs = w->qs.data();
  if (t.type == GgmlType::kQ4_K) {
    ops::q4_set_k_scales(*w, std::move(tb.ksc), std::move(tb.kmin), std::move(tb.kd), std::move(tb.kdmin));
  } else {
    w->scales = std::move(tb.scales);
    w->zeros = std::move(tb.zeros);
    m.scales = w->scales.data();
    m.zeros = w->zeros.data();
    if (t.type == GgmlType::kQ4_0) m.uniform_zero = 8;
    if (std::any_of(tb.offsets.begin(), tb.offsets.end(), [](float o) { return o != 0.0f; }))
      w->offsets = std::move(tb.offsets);
  }
  return ops::make_q4_linear(std::move(w));
}

}  // namespace metharme
