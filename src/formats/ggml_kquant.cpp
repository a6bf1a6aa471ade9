// Quantizers for the K-quant types metharme writes (Q4_K, Q6_K): round to nearest on each
// sub-block's min/max (or absmax) grid, the sub-block scales rounded to the block's 6- or 8-bit
// grid, and the codes recomputed against those rounded scales. Simpler than ggml's iterative
// search (its error is somewhat larger; the export report gives the max weight error).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "formats/ggml_quants.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme {

namespace {

float put_h(uint8_t* p, float v) {
  const uint16_t h = f32_to_fp16(v);
  std::memcpy(p, &h, 2);
  return fp16_to_f32(h);
}

int nearest(float v) { return int(std::nearbyint(v)); }

}  // namespace

void ggml_k4_put_scale_min(int j, uint8_t sc, uint8_t mn, uint8_t* q) {
  if (j < 4) {
    q[j] = uint8_t((q[j] & 0xC0) | (sc & 63));
    q[j + 4] = uint8_t((q[j + 4] & 0xC0) | (mn & 63));
  } else {
    q[j + 4] = uint8_t((sc & 0xF) | ((mn & 0xF) << 4));
    q[j - 4] = uint8_t((q[j - 4] & 63) | ((sc >> 4) << 6));
    q[j] = uint8_t((q[j] & 63) | ((mn >> 4) << 6));
  }
}

namespace {

// The fp16 grid step d for values v[0..8) >= 0 stored as d * round(v / d) with integers 0..63: the
// candidate max(v) / a (a = 1..63) with the smallest squared error. For a GPTQ g128 superblock (two
// distinct scales) this finds a near-rational pair, far closer than d = max / 63 alone.
float best_step(const float* v, uint8_t* out_h) {
  float vmax = 0;
  for (int j = 0; j < 8; ++j) vmax = std::max(vmax, v[j]);
  float best = 0, best_err = INFINITY;
  for (int a = 63; a >= 1 && vmax > 0; --a) {
    uint8_t h[2];
    const float d = put_h(h, vmax / float(a));
    if (!(d > 0)) continue;
    float err = 0;
    for (int j = 0; j < 8; ++j) {
      const float e = v[j] - d * float(std::clamp(nearest(v[j] / d), 0, 63));
      err += e * e;
    }
    if (err < best_err) best_err = err, best = d;
  }
  return put_h(out_h, best);
}

// One Q4_K block (256 values) from x; scale[j] / mn[j] are the wanted sub-block scale and min
// (x ~= scale * q - mn, q in 0..15).
void q4_k_block(const float* x, const float* scale, const float* mn, uint8_t* b) {
  std::memset(b, 0, 144);
  const float d = best_step(scale, b), dmin = best_step(mn, b + 2);
  uint8_t* qs = b + 16;
  for (int j = 0; j < 8; ++j) {
    const uint8_t sc = uint8_t(d > 0 ? std::clamp(nearest(scale[j] / d), 0, 63) : 0);
    const uint8_t m = uint8_t(dmin > 0 ? std::clamp(nearest(mn[j] / dmin), 0, 63) : 0);
    ggml_k4_put_scale_min(j, sc, m, b + 4);
    const float ds = d * float(sc), dm = dmin * float(m);
    for (int l = 0; l < 32; ++l) {
      const int q = ds > 0 ? std::clamp(nearest((x[32 * j + l] + dm) / ds), 0, 15) : 0;
      qs[32 * (j / 2) + l] |= uint8_t(q << (4 * (j % 2)));
    }
  }
}

}  // namespace

void ggml_quantize_q4_k(const float* x, int64_t n, uint8_t* out, const float* sub_scale, const float* sub_min) {
  MH_CHECK(n >= 0 && n % 256 == 0, "ggml_quantize_q4_k: ", n, " values is not a whole number of Q4_K blocks");
  for (int64_t i = 0; i < n / 256; ++i) {
    const float* xb = x + i * 256;
    float sc[8], mn[8];
    for (int j = 0; j < 8; ++j) {
      if (sub_scale) {
        sc[j] = std::max(0.0f, sub_scale[i * 8 + j]);
        mn[j] = std::max(0.0f, sub_min[i * 8 + j]);
        continue;
      }
      float lo = 0, hi = xb[32 * j];
      for (int l = 0; l < 32; ++l) lo = std::min(lo, xb[32 * j + l]), hi = std::max(hi, xb[32 * j + l]);
      sc[j] = (hi - lo) / 15.0f;
      mn[j] = -lo;
    }
    q4_k_block(xb, sc, mn, out + size_t(i) * 144);
  }
}

void ggml_quantize_q6_k(const float* x, int64_t n, uint8_t* out) {
  MH_CHECK(n >= 0 && n % 256 == 0, "ggml_quantize_q6_k: ", n, " values is not a whole number of Q6_K blocks");
  for (int64_t i = 0; i < n / 256; ++i) {
    const float* xb = x + i * 256;
    uint8_t* b = out + size_t(i) * 210;
    std::memset(b, 0, 210);
    float s[16], amax = 0;
    for (int j = 0; j < 16; ++j) {
      float big = 0;  // the value of largest magnitude, with its sign: it maps to code -32
      for (int l = 0; l < 16; ++l)
        if (std::fabs(xb[16 * j + l]) > std::fabs(big)) big = xb[16 * j + l];
      s[j] = -big / 32.0f;
      amax = std::max(amax, std::fabs(s[j]));
    }
    const float d = put_h(b + 208, amax / 127.0f);
    auto* scales = reinterpret_cast<int8_t*>(b + 192);
    for (int j = 0; j < 16; ++j) scales[j] = int8_t(d > 0 ? std::clamp(nearest(s[j] / d), -128, 127) : 0);
    for (int k = 0; k < 256; ++k) {
      const float ds = d * float(scales[k / 16]);
      const int q = (ds != 0 ? std::clamp(nearest(xb[k] / ds), -32, 31) : 0) + 32;
      // Value 128h + 32p + l: low nibble in ql[64h + 32(p & 1) + l] (p >= 2: high nibble), high
      // two bits at bit 2p of qh[32h + l] (the layout ggml_quants.cpp's deq_q6_k reads).
      const int h = k / 128, p = (k % 128) / 32, l = k % 32;
      b[64 * h + 32 * (p & 1) + l] |= uint8_t((q & 15) << (p < 2 ? 0 : 4));
      b[128 + 32 * h + l] |= uint8_t((q >> 4) << (2 * p));
    }
  }
}

}  // namespace metharme
