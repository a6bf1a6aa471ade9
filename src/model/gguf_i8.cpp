#include "model/gguf_i8.h"

#include <cmath>
#include <cstring>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme {

namespace {

float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_f32(h);
}

// One Q8_0 block (34 bytes, 32 values): d, 32 int8 codes.
void put_q8_0(ops::I8Weight& w, int n, int k0, const uint8_t* b) {
  ops::i8_scale(w, n, k0) = h2f(b);
  ops::i8_set_codes(w, n, k0, reinterpret_cast<const int8_t*>(b + 2), 32);
}

// One Q6_K block (210 bytes, 256 values): value 128h + 32p + l (h < 2, p < 4, l < 32) has the low
// nibble (p odd: ql[64h + 32 + l], else ql[64h + l]; p >= 2: high nibble), two high bits from
// qh[32h + l] at bit 2p, and the int8 scale of its 16-block; w = d * scale * (q - 32).
void put_q6_k(ops::I8Weight& w, int n, int k0, const uint8_t* b) {
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  std::memcpy(&ops::i8_kd(w, n, k0), b + 208, 2);
  for (int j = 0; j < 16; ++j) ops::i8_ksc(w, n, k0 + 16 * j) = sc[j];
  int8_t code[256];
  for (int h = 0; h < 2; ++h) {
    const uint8_t* ql = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    for (int p = 0; p < 4; ++p)
      for (int l = 0; l < 32; ++l) {
        const uint8_t lowb = ql[l + 32 * (p & 1)];
        const int lo = p < 2 ? (lowb & 0xF) : (lowb >> 4);
        const int q = lo | (((qh[l] >> (2 * p)) & 3) << 4);
        code[128 * h + 32 * p + l] = int8_t(q - 32);
      }
  }
  ops::i8_set_codes(w, n, k0, code, 256);
}

// One Q5_K block (176 bytes, 256 values): fp16 d, dmin, 12 scale bytes, 32 bytes of fifth bits,
// 128 bytes of nibbles; sub-block s < 8 of 32: w = d * sc * q - dmin * m, q = 5 bits.
void put_q5_k(ops::I8Weight& w, int n, int k0, const uint8_t* b) {
  std::memcpy(&ops::i8_kd(w, n, k0), b, 2);
  std::memcpy(&ops::i8_kdmin(w, n, k0), b + 2, 2);
  const uint8_t* qh = b + 16;
  for (int s = 0; s < 8; ++s) {
    uint8_t sc, mn;
    ggml_k4_scale_min(s, b + 4, &sc, &mn);
    ops::i8_ksc(w, n, k0 + 32 * s) = int8_t(sc);
    ops::i8_kmin(w, n, k0 + 32 * s) = mn;
    const uint8_t* ql = b + 48 + 32 * (s / 2);
    int8_t code[32];
    for (int l = 0; l < 32; ++l) {
      const int lo = s % 2 ? (ql[l] >> 4) : (ql[l] & 0xF);
      code[l] = int8_t(lo | (((qh[l] >> s) & 1) << 4));
    }
    ops::i8_set_codes(w, n, k0 + 32 * s, code, 32);
  }
}

// One Q5_0 (22 bytes: d, 32 high bits, 16 bytes of nibbles; w = d * (q - 16)) or Q5_1 block (24
// bytes: d, m, high bits, nibbles; w = d * q + m) of 32 values: value j < 16 is the low nibble of
// byte j, value j + 16 its high nibble, and bit j of the high word is value j's fifth bit.
void put_q5_01(ops::I8Weight& w, int n, int k0, const uint8_t* b, bool q5_1) {
  const uint8_t* qh_p = b + (q5_1 ? 4 : 2);
  const uint8_t* qs = qh_p + 4;
  uint32_t qh;
  std::memcpy(&qh, qh_p, 4);
  ops::i8_scale(w, n, k0) = h2f(b);
  if (q5_1) ops::i8_add(w, n, k0) = h2f(b + 2);
  const int bias = q5_1 ? 0 : 16;
  int8_t code[32];
  for (int j = 0; j < 16; ++j) {
    code[j] = int8_t(int((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - bias);
    code[j + 16] = int8_t(int((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - bias);
  }
  ops::i8_set_codes(w, n, k0, code, 32);
}

// One Q3_K block (110 bytes, 256 values): 32 bytes of high-bit masks, 64 of 2-bit codes, 12 of
// sixteen 6-bit scales, fp16 d. Value 128h + 32p + 16s + l (h < 2, p < 4, s < 2, l < 16) has the
// two bits (qs[32h + 16s + l] >> 2p) & 3, less 4 unless bit 4h + p of hmask[16s + l] is set, and
// the scale of its 16-block; w = d * (scale - 32) * code.
void put_q3_k(ops::I8Weight& w, int n, int k0, const uint8_t* b) {
  const uint8_t* hm = b;
  int sc[16];
  ggml_q3_k_scales(b + 96, sc);
  std::memcpy(&ops::i8_kd(w, n, k0), b + 108, 2);
  for (int j = 0; j < 16; ++j) ops::i8_ksc(w, n, k0 + 16 * j) = int8_t(sc[j]);
  int8_t code[256];
  int i = 0;
  for (int h = 0; h < 2; ++h) {
    const uint8_t* q = b + 32 + 32 * h;
    for (int p = 0; p < 4; ++p) {
      const uint8_t m = uint8_t(1u << (4 * h + p));
      for (int l = 0; l < 32; ++l) code[i++] = int8_t(int((q[l] >> (2 * p)) & 3) - ((hm[l] & m) ? 0 : 4));
    }
  }
  ops::i8_set_codes(w, n, k0, code, 256);
}

const char* kind_name(GgmlType t) {
  switch (t) {
    case GgmlType::kQ8_0:
      return "q8_0";
    case GgmlType::kQ5_0:
      return "q5_0";
    case GgmlType::kQ5_1:
      return "q5_1";
    case GgmlType::kQ3_K:
      return "q3_k";
    case GgmlType::kQ5_K:
      return "q5_k";
    default:
      return "q6_k";
  }
}

// Values per block (32 or 256) and rows per scale (16 or 32).
int block_values(GgmlType t) { return t == GgmlType::kQ8_0 || t == GgmlType::kQ5_0 || t == GgmlType::kQ5_1 ? 32 : 256; }
int scale_rows(GgmlType t) { return t == GgmlType::kQ6_K || t == GgmlType::kQ3_K ? 16 : 32; }

}  // namespace

bool gguf_i8_type(GgmlType t) {
  return t == GgmlType::kQ8_0 || t == GgmlType::kQ5_0 || t == GgmlType::kQ5_1 || t == GgmlType::kQ3_K ||
         t == GgmlType::kQ5_K || t == GgmlType::kQ6_K;
}

ops::Linear gguf_i8_linear(const GgufTensorInfo& t, int N, int K, int qk_head_dim, ThreadPool& pool,
                           const std::string& file) {
  const int be = block_values(t.type);
  const size_t bb = ggml_block_bytes(t.type);
  const size_t row_bytes = size_t(K / be) * bb;  // the reader checked K % be == 0 and nbytes
  const bool adds = t.type == GgmlType::kQ5_K || t.type == GgmlType::kQ5_1;
  auto w = ops::i8_alloc(N, K, scale_rows(t.type), adds, kind_name(t.type));
  if (be == 256) ops::i8_use_k_scales(*w);  // K-quants keep their scale layout
  pool.parallel_for(N, 16, [&](int64_t n0, int64_t n1, int) {
    for (int n = int(n0); n < int(n1); ++n) {
      const int src = qk_head_dim ? hf_qk_row_to_gguf(n, qk_head_dim) : n;
      const uint8_t* row = t.data + size_t(src) * row_bytes;
      for (int i = 0; i < K / be; ++i) {
        const uint8_t* b = row + size_t(i) * bb;
        switch (t.type) {
          case GgmlType::kQ8_0:
            put_q8_0(*w, n, i * be, b);
            break;
          case GgmlType::kQ5_0:
            put_q5_01(*w, n, i * be, b, false);
            break;
          case GgmlType::kQ5_1:
            put_q5_01(*w, n, i * be, b, true);
            break;
          case GgmlType::kQ3_K:
            put_q3_k(*w, n, i * be, b);
            break;
          case GgmlType::kQ6_K:
            put_q6_k(*w, n, i * be, b);
            break;
          default:
            put_q5_k(*w, n, i * be, b);
            break;
        }
      }
    }
  });
  ops::i8_finish(*w);
  // A scale or add that is not finite (a d, dmin or m of inf/NaN in the file) is refused: the fp32
  // form holds every one, in [n_tiles][blocks][16].
  const ops::I8Scales f = ops::i8_scales(*w);
  for (const std::vector<float>* v : {&f.scales, &f.adds}) {
    const size_t per_tile = v->size() / size_t(w->mat.n_tiles);
    for (size_t i = 0; i < v->size(); ++i)
      if (!std::isfinite((*v)[i])) {
        const int n = int(i / per_tile) * kernels::kI8TileCols + int(i % kernels::kI8TileCols);
        fail(file, ": tensor '", t.name, "' row ", qk_head_dim ? hf_qk_row_to_gguf(n, qk_head_dim) : n,
             " has a block scale, min or offset that is not a finite number");
      }
  }
  return ops::make_i8_linear(std::move(w));
}

}  // namespace metharme
