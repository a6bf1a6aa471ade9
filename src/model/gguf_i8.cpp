#include "model/gguf_i8.h"

#include <cstring>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
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

const char* kind_name(GgmlType t) { return t == GgmlType::kQ8_0 ? "q8_0" : t == GgmlType::kQ5_K ? "q5_k" : "q6_k"; }

}  // namespace

bool gguf_i8_type(GgmlType t) { return t == GgmlType::kQ8_0 || t == GgmlType::kQ5_K || t == GgmlType::kQ6_K; }

ops::Linear gguf_i8_linear(const GgufTensorInfo& t, int N, int K, int qk_head_dim, ThreadPool& pool) {
  const int be = t.type == GgmlType::kQ8_0 ? 32 : 256;
  const size_t bb = ggml_block_bytes(t.type);
  const size_t row_bytes = size_t(K / be) * bb;  // the reader checked K % be == 0 and nbytes
  auto w = ops::i8_alloc(N, K, t.type == GgmlType::kQ6_K ? 16 : 32, t.type == GgmlType::kQ5_K, kind_name(t.type));
  if (t.type != GgmlType::kQ8_0) ops::i8_use_k_scales(*w);  // K-quants keep their scale layout
  pool.parallel_for(N, 16, [&](int64_t n0, int64_t n1, int) {
    for (int n = int(n0); n < int(n1); ++n) {
      const int src = qk_head_dim ? hf_qk_row_to_gguf(n, qk_head_dim) : n;
      const uint8_t* row = t.data + size_t(src) * row_bytes;
      for (int i = 0; i < K / be; ++i) {
        const uint8_t* b = row + size_t(i) * bb;
        if (t.type == GgmlType::kQ8_0)
          put_q8_0(*w, n, i * be, b);
        else if (t.type == GgmlType::kQ6_K)
          put_q6_k(*w, n, i * be, b);
        else
          put_q5_k(*w, n, i * be, b);
      }
    }
  });
  ops::i8_finish(*w);
  ops::Linear l;
  l.kind = ops::Linear::Kind::kI8;
  l.n_out = N;
  l.n_in = K;
  l.i8 = std::move(w);
  return l;
}

}  // namespace metharme
