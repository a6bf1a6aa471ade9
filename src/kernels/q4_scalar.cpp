// Reference int4 kernels: plain loops over the layout described in q4.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/q4.h"
#include "kernels/selftest.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

inline int code_at(const uint8_t* tile, int k, int c) {
  uint8_t b = tile[size_t(k / 8) * kQ4StepBytes + size_t(c / 8) * 32 + size_t(c % 8) * 4 + size_t(k % 4)];
  return (k % 8) < 4 ? (b & 0xF) : (b >> 4);
}

// Cell gi indexes [n_tiles][n_groups][16]; the Q4_K super-block's index [n_tiles][n_groups/8][16].
inline size_t super_index(const Q4Matrix& w, size_t gi) {
  const size_t c = gi % kQ4TileCols, tg = gi / kQ4TileCols, t = tg / size_t(w.n_groups), g = tg % size_t(w.n_groups);
  return (t * size_t(w.n_groups / 8) + g / 8) * kQ4TileCols + c;
}

void quantize_q8(const float* x, int n, int block, int8_t* q, float* d, int32_t* sum) {
  for (int b = 0; b * block < n; ++b) {
    const float* xb = x + size_t(b) * block;
    float amax = 0;
    for (int i = 0; i < block; ++i) amax = std::max(amax, std::fabs(xb[i]));
    const float db = amax / 127.0f;
    const float id = amax > 0 ? 127.0f / amax : 0.0f;
    int32_t s = 0;
    for (int i = 0; i < block; ++i) {
      // nearbyint rounds half to even, like vcvtps2dq.
      int v = int(std::nearbyint(xb[i] * id));
      v = std::clamp(v, -127, 127);
      q[size_t(b) * block + i] = int8_t(v);
      s += v;
    }
    d[b] = db;
    sum[b] = s;
  }
}

void gemm_q8(const Q4Matrix& w, const Q8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  const int nb = w.kp / x.block, bpg = w.gs / x.block;
  for (int t = t0; t < t1; ++t) {
    const uint8_t* tile = w.qs + size_t(t) * w.tile_qs_bytes();
    for (int c = 0; c < kQ4TileCols; ++c) {
      const int n = t * kQ4TileCols + c;
      if (n >= w.n) break;
      for (int m = 0; m < M; ++m) {
        const int8_t* xq = x.q + size_t(m) * x.kp;
        float acc = 0;
        for (int b = 0; b < nb; ++b) {
          int32_t isum = 0;
          for (int k = b * x.block; k < (b + 1) * x.block; ++k) isum += code_at(tile, k, c) * int32_t(xq[k]);
          const size_t gi = (size_t(t) * w.n_groups + size_t(b / bpg)) * kQ4TileCols + size_t(c);
          const int32_t xs = x.sum[size_t(m) * nb + size_t(b)];
          const float f = float(isum - int32_t(q4_zero_at(w, gi)) * xs);
          const float xd = x.d[size_t(m) * nb + size_t(b)];
          acc = std::fma(q4_scale_at(w, gi) * xd, f, acc);
          acc = std::fma(-q4_min_at(w, gi), xd * float(xs), acc);
        }
        y[m * ldy + n] = acc;
      }
    }
  }
}

void gemm_f32(const Q4Matrix& w, const F32Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  for (int t = t0; t < t1; ++t) {
    const uint8_t* tile = w.qs + size_t(t) * w.tile_qs_bytes();
    for (int c = 0; c < kQ4TileCols; ++c) {
      const int n = t * kQ4TileCols + c;
      if (n >= w.n) break;
      for (int m = 0; m < M; ++m) {
        const float* xr = x.x + size_t(m) * x.kp;
        double acc = 0;
        for (int g = 0; g < w.n_groups; ++g) {
          double ga = 0;
          for (int k = g * w.gs; k < (g + 1) * w.gs; ++k) ga += double(code_at(tile, k, c)) * double(xr[k]);
          const size_t gi = (size_t(t) * w.n_groups + size_t(g)) * kQ4TileCols + size_t(c);
          const double z = q4_zero_at(w, gi), gsum = x.gsum[size_t(m) * x.n_groups + size_t(g)];
          acc += double(q4_scale_at(w, gi)) * (ga - z * gsum) - double(q4_min_at(w, gi)) * gsum;
        }
        y[m * ldy + n] = float(acc);
      }
    }
  }
}

void dequant(const Q4Matrix& w, int t0, int t1, float* out) {
  for (int t = t0; t < t1; ++t) {
    const uint8_t* tile = w.qs + size_t(t) * w.tile_qs_bytes();
    for (int c = 0; c < kQ4TileCols; ++c) {
      float* row = out + (size_t(t - t0) * kQ4TileCols + size_t(c)) * size_t(w.kp);
      for (int g = 0; g < w.n_groups; ++g) {
        const size_t gi = (size_t(t) * w.n_groups + size_t(g)) * kQ4TileCols + size_t(c);
        const float s = q4_scale_at(w, gi), mn = q4_min_at(w, gi);
        const int z = q4_zero_at(w, gi);
        for (int k = g * w.gs; k < (g + 1) * w.gs; ++k) row[k] = s * float(code_at(tile, k, c) - z) - mn;
      }
    }
  }
}

}  // namespace

float q4_scale_at(const Q4Matrix& w, size_t gi) {
  if (w.ksc) return fp16_to_f32(w.kd[super_index(w, gi)]) * float(w.ksc[gi]);
  return w.scales_f32 ? w.scales_f32[gi] : fp16_to_f32(w.scales[gi]);
}
float q4_min_at(const Q4Matrix& w, size_t gi) {
  return w.ksc ? fp16_to_f32(w.kdmin[super_index(w, gi)]) * float(w.kmin[gi]) : 0.0f;
}
int q4_zero_at(const Q4Matrix& w, size_t gi) { return w.ksc ? 0 : w.zeros[gi]; }

const Q4Kernels& q4_kernels_scalar() {
  static const Q4Kernels k{quantize_q8, gemm_q8, gemm_f32, dequant};
  return k;
}

const Q4Kernels& q4_kernels(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return q4_kernels_avx512();
    case Isa::kAvx2:
      return q4_kernels_avx2();
    case Isa::kScalar:
      break;
  }
  return q4_kernels_scalar();
}

const Q4Kernels& q4_kernels() { return q4_kernels(checked_isa(q4_family())); }

}  // namespace metharme::kernels
