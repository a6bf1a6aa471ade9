// Reference KV kernels (kernels/kv.h): plain loops summing in double, the oracle for the AVX2 and
// AVX-512 twins. The quantizers here are the only ones: every ISA stores rows with them, so a
// row's bytes never depend on the CPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <string>

#include "kernels/dense.h"
#include "kernels/kv.h"
#include "kernels/selftest.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

size_t block_bytes(KvType t, int len) { return 2 + size_t(t == KvType::kQ8 ? len : (len + 1) / 2); }

void quantize_block(KvType t, const float* x, int len, uint8_t* out) {
  float d = 0;
  if (t == KvType::kQ8) {
    float amax = 0;
    for (int i = 0; i < len; ++i) amax = std::max(amax, std::fabs(x[i]));
    d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    auto* q = reinterpret_cast<int8_t*>(out + 2);
    for (int i = 0; i < len; ++i) q[i] = int8_t(std::lround(x[i] * id));
  } else {
    float amax = 0, m = 0;
    for (int i = 0; i < len; ++i)
      if (std::fabs(x[i]) > amax) {
        amax = std::fabs(x[i]);
        m = x[i];
      }
    d = m / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    const int half = (len + 1) / 2;
    auto nib = [&](int i) { return i < len ? uint8_t(std::min(15, int(x[i] * id + 8.5f))) : uint8_t(8); };
    for (int i = 0; i < half; ++i) out[2 + i] = uint8_t(nib(i) | (nib(i + half) << 4));
  }
  const uint16_t h = f32_to_fp16(d);
  std::memcpy(out, &h, 2);
}

void dequantize_block(KvType t, const uint8_t* in, int len, float* y) {
  uint16_t h;
  std::memcpy(&h, in, 2);
  const float d = fp16_to_f32(h);
  if (t == KvType::kQ8) {
    const auto* q = reinterpret_cast<const int8_t*>(in + 2);
    for (int i = 0; i < len; ++i) y[i] = d * float(q[i]);
  } else {
    const int half = (len + 1) / 2;
    for (int i = 0; i < len; ++i) {
      const uint8_t b = in[2 + (i < half ? i : i - half)];
      y[i] = d * float(int(i < half ? b & 15 : b >> 4) - 8);
    }
  }
}

// One row: the blocks in order.
void row_to_f32(KvType t, const uint8_t* row, int head_dim, float* y) {
  if (t == KvType::kF32 || t == KvType::kF16) {
    dense_kernels_scalar().to_f32(t == KvType::kF32 ? WType::kF32 : WType::kF16, row, y, head_dim);
    return;
  }
  for (int b = 0; b < head_dim; b += kKvBlock) {
    const int len = std::min(kKvBlock, head_dim - b);
    dequantize_block(t, row, len, y + b);
    row += block_bytes(t, len);
  }
}

void to_f32(KvType t, const void* src, int head_dim, int n_rows, float* dst) {
  const size_t rb = kv_row_bytes(t, head_dim);
  for (int r = 0; r < n_rows; ++r)
    row_to_f32(t, static_cast<const uint8_t*>(src) + size_t(r) * rb, head_dim, dst + size_t(r) * size_t(head_dim));
}

void from_f32(KvType t, const float* src, int head_dim, int n_rows, void* dst) {
  auto* out = static_cast<uint8_t*>(dst);
  if (t == KvType::kF32 || t == KvType::kF16) {
    dense_kernels_scalar().from_f32(t == KvType::kF32 ? WType::kF32 : WType::kF16, src, out,
                                    int64_t(n_rows) * head_dim);
    return;
  }
  for (int r = 0; r < n_rows; ++r)
    for (int b = 0; b < head_dim; b += kKvBlock) {
      const int len = std::min(kKvBlock, head_dim - b);
      quantize_block(t, src + size_t(r) * size_t(head_dim) + size_t(b), len, out);
      out += block_bytes(t, len);
    }
}

// Values [b0, b0 + len) of a row, len <= 32 and b0 a multiple of 32 (one block).
void row_part(KvType t, const uint8_t* row, int b0, int len, float* y) {
  switch (t) {
    case KvType::kF32:
      std::memcpy(y, row + size_t(b0) * 4, size_t(len) * 4);
      return;
    case KvType::kF16:
      for (int i = 0; i < len; ++i) {
        uint16_t h;
        std::memcpy(&h, row + size_t(b0 + i) * 2, 2);
        y[i] = fp16_to_f32(h);
      }
      return;
    case KvType::kQ8:
    case KvType::kQ4:
      break;
  }
  dequantize_block(t, row + size_t(b0 / kKvBlock) * block_bytes(t, kKvBlock), len, y);
}

// No allocation: the scalar kernels also serve quantized rows whose head_dim is not a multiple of 32.
void scores(KvType t, const void* k, int head_dim, int n_pos, const float* q, int64_t ldq, int n_q, float* s,
            int64_t lds) {
  const size_t rb = kv_row_bytes(t, head_dim);
  float part[kKvBlock];
  for (int h = 0; h < n_q; ++h)
    for (int j = 0; j < n_pos; ++j) {
      double acc = 0;
      for (int b0 = 0; b0 < head_dim; b0 += kKvBlock) {
        const int len = std::min(kKvBlock, head_dim - b0);
        row_part(t, static_cast<const uint8_t*>(k) + size_t(j) * rb, b0, len, part);
        for (int i = 0; i < len; ++i) acc += double(q[h * ldq + b0 + i]) * double(part[i]);
      }
      s[h * lds + j] = float(acc);
    }
}

void weighted_sum(KvType t, const void* v, int head_dim, int n_pos, const float* p, int64_t ldp, int n_q, float* o,
                  int64_t ldo) {
  const size_t rb = kv_row_bytes(t, head_dim);
  float part[kKvBlock];
  for (int h = 0; h < n_q; ++h)
    for (int b0 = 0; b0 < head_dim; b0 += kKvBlock) {
      const int len = std::min(kKvBlock, head_dim - b0);
      double acc[kKvBlock] = {};
      for (int j = 0; j < n_pos; ++j) {
        row_part(t, static_cast<const uint8_t*>(v) + size_t(j) * rb, b0, len, part);
        for (int i = 0; i < len; ++i) acc[i] += double(p[h * ldp + j]) * double(part[i]);
      }
      for (int i = 0; i < len; ++i) o[h * ldo + b0 + i] += float(acc[i]);
    }
}

}  // namespace

namespace kv_detail {
namespace {
WType dense_type(KvType t) { return t == KvType::kF32 ? WType::kF32 : WType::kF16; }
}  // namespace

void dense_scores(KvType t, const void* k, int head_dim, int n_pos, const float* q, int64_t ldq, int n_q, float* s,
                  int64_t lds) {
  if (t != KvType::kF32 && t != KvType::kF16) return scores(t, k, head_dim, n_pos, q, ldq, n_q, s, lds);
  dense_kernels().gemm(dense_type(t), k, head_dim, q, ldq, s, lds, n_q, head_dim, 0, n_pos);
}

void dense_weighted_sum(KvType t, const void* v, int head_dim, int n_pos, const float* p, int64_t ldp, int n_q,
                        float* o, int64_t ldo) {
  if (t != KvType::kF32 && t != KvType::kF16) return weighted_sum(t, v, head_dim, n_pos, p, ldp, n_q, o, ldo);
  for (int h = 0; h < n_q; ++h)
    dense_kernels().gemv_t(dense_type(t), v, head_dim, p + h * ldp, n_pos, head_dim, o + h * ldo);
}

void dense_to_f32(KvType t, const void* src, int head_dim, int n_rows, float* dst) {
  if (t != KvType::kF32 && t != KvType::kF16) return to_f32(t, src, head_dim, n_rows, dst);
  dense_kernels().to_f32(dense_type(t), src, dst, int64_t(n_rows) * head_dim);
}
}  // namespace kv_detail

size_t kv_row_bytes(KvType t, int head_dim) {
  switch (t) {
    case KvType::kF32:
      return size_t(head_dim) * 4;
    case KvType::kF16:
      return size_t(head_dim) * 2;
    case KvType::kQ8:
    case KvType::kQ4:
      break;
  }
  const int full = head_dim / kKvBlock, rest = head_dim % kKvBlock;
  return size_t(full) * block_bytes(t, kKvBlock) + (rest ? block_bytes(t, rest) : 0);
}

const char* kv_type_name(KvType t) {
  switch (t) {
    case KvType::kF32:
      return "f32";
    case KvType::kF16:
      return "f16";
    case KvType::kQ8:
      return "q8";
    case KvType::kQ4:
      return "q4";
  }
  return "?";
}

bool parse_kv_type(const char* s, KvType* out) {
  const std::string v = s ? s : "";
  if (v == "f32")
    *out = KvType::kF32;
  else if (v == "f16")
    *out = KvType::kF16;
  else if (v == "q8" || v == "q8_0")
    *out = KvType::kQ8;
  else if (v == "q4" || v == "q4_0")
    *out = KvType::kQ4;
  else
    return false;
  return true;
}

const KvKernels& kv_kernels_scalar() {
  static const KvKernels k{scores, weighted_sum, to_f32, from_f32, kv_detail::flash_scalar, kv_detail::decode_scalar};
  return k;
}

const KvKernels& kv_kernels(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return kv_kernels_avx512();
    case Isa::kAvx2:
      return kv_kernels_avx2();
    case Isa::kScalar:
      break;
  }
  return kv_kernels_scalar();
}

const KvKernels& kv_kernels() { return kv_kernels(checked_isa(kv_family())); }

}  // namespace metharme::kernels
