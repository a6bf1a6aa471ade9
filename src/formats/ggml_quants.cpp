#include "formats/ggml_quants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/error.h"
#include "util/half.h"

namespace metharme {

namespace {

constexpr int kQK = 32;    // values per small block

float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_f32(h);
}

void deq_q4_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  const uint8_t* qs = b + 2;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * float((qs[j] & 0xF) - 8);
    y[j + kQK / 2] = d * float((qs[j] >> 4) - 8);
  }
}

void deq_q4_1(const uint8_t* b, float* y) {
  const float d = h2f(b), m = h2f(b + 2);
  const uint8_t* qs = b + 4;
  for (int j = 0; j < kQK / 2; ++j) {
    y[j] = d * float(qs[j] & 0xF) + m;
    y[j + kQK / 2] = d * float(qs[j] >> 4) + m;
  }
}

// Q5: value j's fifth bit is bit j of the 32-bit high word.
void deq_q5(const uint8_t* qh_p, const uint8_t* qs, float d, float m, int bias, float* y) {
  uint32_t qh;
  std::memcpy(&qh, qh_p, 4);
  for (int j = 0; j < kQK / 2; ++j) {
    const int x0 = int((qs[j] & 0xF) | (((qh >> j) & 1) << 4)) - bias;
    const int x1 = int((qs[j] >> 4) | (((qh >> (j + 16)) & 1) << 4)) - bias;
    y[j] = d * float(x0) + m;
    y[j + kQK / 2] = d * float(x1) + m;
  }
}

void deq_q8_0(const uint8_t* b, float* y) {
  const float d = h2f(b);
  const auto* qs = reinterpret_cast<const int8_t*>(b + 2);
  for (int j = 0; j < kQK; ++j) y[j] = d * float(qs[j]);
}

void deq_q2_k(const uint8_t* b, float* y) {
  const uint8_t* scales = b;
  const uint8_t* q = b + 16;
  const float d = h2f(b + 80), dmin = h2f(b + 82);
  int is = 0;
  for (int half = 0; half < 2; ++half, q += 32) {  // 128 values per 32 code bytes
    for (int shift = 0; shift < 8; shift += 2) {
      for (int part = 0; part < 2; ++part) {  // codes q[0..16) then q[16..32)
        const uint8_t sc = scales[is++];
        const float dl = d * float(sc & 0xF), ml = dmin * float(sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * float((q[l + 16 * part] >> shift) & 3) - ml;
      }
    }
  }
}

void q3_k_scales(const uint8_t* s, int* out) { ggml_q3_k_scales(s, out); }

void deq_q3_k(const uint8_t* b, float* y) {
  const uint8_t* hm = b;
  const uint8_t* q = b + 32;
  int sc[16];
  q3_k_scales(b + 96, sc);
  const float d = h2f(b + 108);
  int is = 0;
  uint8_t m = 1;
  for (int half = 0; half < 2; ++half, q += 32) {
    for (int shift = 0; shift < 8; shift += 2, m = uint8_t(m << 1)) {
      for (int part = 0; part < 2; ++part) {
        const float dl = d * float(sc[is++]);
        for (int l = 16 * part; l < 16 * part + 16; ++l)
          *y++ = dl * float(int((q[l] >> shift) & 3) - ((hm[l] & m) ? 0 : 4));
      }
    }
  }
}

void deq_q4_k(const uint8_t* b, float* y) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* q = b + 16;
  for (int j = 0; j < 4; ++j, q += 32) {  // 64 values per 32 bytes: low nibbles, then high
    uint8_t sc, mn;
    ggml_k4_scale_min(2 * j, scales, &sc, &mn);
    const float d1 = d * sc, m1 = dmin * mn;
    ggml_k4_scale_min(2 * j + 1, scales, &sc, &mn);
    const float d2 = d * sc, m2 = dmin * mn;
    for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0xF) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
  }
}

void deq_q5_k(const uint8_t* b, float* y) {
  const float d = h2f(b), dmin = h2f(b + 2);
  const uint8_t* scales = b + 4;
  const uint8_t* qh = b + 16;
  const uint8_t* ql = b + 48;
  for (int j = 0; j < 4; ++j, ql += 32) {
    uint8_t sc, mn;
    ggml_k4_scale_min(2 * j, scales, &sc, &mn);
    const float d1 = d * sc, m1 = dmin * mn;
    ggml_k4_scale_min(2 * j + 1, scales, &sc, &mn);
    const float d2 = d * sc, m2 = dmin * mn;
    const int b1 = 2 * j, b2 = 2 * j + 1;  // bit of qh[l] holding the fifth bit
    for (int l = 0; l < 32; ++l) *y++ = d1 * float((ql[l] & 0xF) | (((qh[l] >> b1) & 1) << 4)) - m1;
    for (int l = 0; l < 32; ++l) *y++ = d2 * float((ql[l] >> 4) | (((qh[l] >> b2) & 1) << 4)) - m2;
  }
}

void deq_q6_k(const uint8_t* b, float* y) {
  const uint8_t* ql = b;
  const uint8_t* qh = b + 128;
  const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
  const float d = h2f(b + 208);
  for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
    for (int l = 0; l < 32; ++l) {
      const int is = l / 16;
      const int q1 = int((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
      const int q2 = int((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
      const int q3 = int((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
      const int q4 = int((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      y[l] = d * float(sc[is]) * float(q1);
      y[l + 32] = d * float(sc[is + 2]) * float(q2);
      y[l + 64] = d * float(sc[is + 4]) * float(q3);
      y[l + 96] = d * float(sc[is + 6]) * float(q4);
    }
  }
}

void put_h(uint8_t* p, float v) {
  const uint16_t h = f32_to_fp16(v);
  std::memcpy(p, &h, 2);
}

void quant_q8_0(const float* x, uint8_t* b) {
  float amax = 0;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  put_h(b, d);
  for (int j = 0; j < kQK; ++j) b[2 + j] = uint8_t(int8_t(std::lround(x[j] * id)));
}

void quant_q4_0(const float* x, uint8_t* b) {
  float amax = 0, max = 0;  // the value of largest magnitude, with its sign
  for (int j = 0; j < kQK; ++j)
    if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
  const float d = max / -8.0f, id = d != 0 ? 1.0f / d : 0.0f;
  put_h(b, d);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, int(x[j] * id + 8.5f)), q1 = std::min(15, int(x[j + kQK / 2] * id + 8.5f));
    b[2 + j] = uint8_t(q0 | q1 << 4);
  }
}

void quant_q4_1(const float* x, uint8_t* b) {
  float lo = x[0], hi = x[0];
  for (int j = 1; j < kQK; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
  const float d = (hi - lo) / 15.0f, id = d != 0 ? 1.0f / d : 0.0f;
  put_h(b, d);
  put_h(b + 2, lo);
  for (int j = 0; j < kQK / 2; ++j) {
    const int q0 = std::min(15, int((x[j] - lo) * id + 0.5f));
    const int q1 = std::min(15, int((x[j + kQK / 2] - lo) * id + 0.5f));
    b[4 + j] = uint8_t(q0 | q1 << 4);
  }
}

}  // namespace

void ggml_quantize(GgmlType t, const float* x, int64_t n, uint8_t* out) {
  const int64_t be = ggml_block_elems(t);
  MH_CHECK(n >= 0 && n % be == 0, "ggml_quantize: ", n, " values is not a whole number of ",
           ggml_type_name(uint32_t(t)), " blocks");
  if (t == GgmlType::kQ4_K) return ggml_quantize_q4_k(x, n, out);
  if (t == GgmlType::kQ6_K) return ggml_quantize_q6_k(x, n, out);
  const size_t bb = ggml_block_bytes(t);
  for (int64_t i = 0; i < n / be; ++i) {
    const float* xb = x + i * be;
    uint8_t* b = out + size_t(i) * bb;
    switch (t) {
      case GgmlType::kF32:
        std::memcpy(b, xb, 4);
        break;
      case GgmlType::kF16:
        put_h(b, *xb);
        break;
      case GgmlType::kBF16: {
        const uint16_t h = f32_to_bf16(*xb);
        std::memcpy(b, &h, 2);
        break;
      }
      case GgmlType::kQ8_0:
        quant_q8_0(xb, b);
        break;
      case GgmlType::kQ4_0:
        quant_q4_0(xb, b);
        break;
      case GgmlType::kQ4_1:
        quant_q4_1(xb, b);
        break;
      default:
        fail("ggml_quantize: writing ", ggml_type_name(uint32_t(t)), " is not supported");
    }
  }
}

void ggml_k4_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* mn) {
  if (j < 4) {
    *sc = q[j] & 63;
    *mn = q[j + 4] & 63;
  } else {
    *sc = uint8_t((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *mn = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void ggml_dequantize(GgmlType t, const void* src, int64_t n, float* out) {
  const auto* p = static_cast<const uint8_t*>(src);
  const int64_t be = ggml_block_elems(t);
  MH_CHECK(n >= 0 && n % be == 0, "ggml_dequantize: ", n, " values is not a whole number of ",
           ggml_type_name(uint32_t(t)), " blocks");
  const size_t bb = ggml_block_bytes(t);
  const int64_t nb = n / be;
  switch (t) {
    case GgmlType::kF32:
      std::memcpy(out, p, size_t(n) * 4);
      return;
    case GgmlType::kF16:
      for (int64_t i = 0; i < n; ++i) out[i] = h2f(p + 2 * i);
      return;
    case GgmlType::kBF16:
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_f32(h);
      }
      return;
    default:
      break;
  }
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* b = p + size_t(i) * bb;
    float* y = out + i * be;
    switch (t) {
      case GgmlType::kQ4_0:
        deq_q4_0(b, y);
        break;
      case GgmlType::kQ4_1:
        deq_q4_1(b, y);
        break;
      case GgmlType::kQ5_0:
        deq_q5(b + 2, b + 6, h2f(b), 0.0f, 16, y);
        break;
      case GgmlType::kQ5_1:
        deq_q5(b + 4, b + 8, h2f(b), h2f(b + 2), 0, y);
        break;
      case GgmlType::kQ8_0:
        deq_q8_0(b, y);
        break;
      case GgmlType::kQ2_K:
        deq_q2_k(b, y);
        break;
      case GgmlType::kQ3_K:
        deq_q3_k(b, y);
        break;
      case GgmlType::kQ4_K:
        deq_q4_k(b, y);
        break;
      case GgmlType::kQ5_K:
        deq_q5_k(b, y);
        break;
      case GgmlType::kQ6_K:
        deq_q6_k(b, y);
        break;
      default:
        fail("ggml_dequantize: type ", ggml_type_name(uint32_t(t)), " is not supported");
    }
  }
}

// Low nibbles in bytes 0..7 (two per byte: scales j and j+8), high two bits in bytes 8..11 (four
// per byte).
void ggml_q3_k_scales(const uint8_t* scales, int* out) {
  for (int j = 0; j < 16; ++j) {
    const int lo = j < 8 ? (scales[j] & 0xF) : (scales[j - 8] >> 4);
    const int hi = (scales[8 + (j & 3)] >> (2 * (j >> 2))) & 3;
    out[j] = (lo | (hi << 4)) - 32;
  }
}

}  // namespace metharme
