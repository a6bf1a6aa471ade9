// Reference int8-code kernels: plain loops over the layout described in i8w.h. The optimized
// kernels round in the same order (per 16 k: acc = fma(scale * xd, isum, acc); per 32 k with
// adds: acc = fma(add * xd, xsum, acc)), so they agree to a few ulps.
#include <cmath>

#include "kernels/i8w.h"
#include "kernels/selftest.h"
#include "util/half.h"

namespace metharme::kernels {

namespace {

inline int code_at(const int8_t* tile, int k, int c) {
  return tile[size_t(k / kI8StepK) * kI8StepBytes + size_t(c) * 4 + size_t(k % 4)];
}

inline size_t tile_bytes(const I8Matrix& w) { return size_t(w.kp) / kI8StepK * kI8StepBytes; }

bool has_adds(const I8Matrix& w) { return w.adds || w.kmin; }

void gemm(const I8Matrix& w, const I8Act& x, int M, int t0, int t1, float* y, int64_t ldy) {
  const int nb = w.kp / 32;
  for (int t = t0; t < t1; ++t) {
    const int8_t* tile = w.qs + size_t(t) * tile_bytes(w);
    for (int c = 0; c < kI8TileCols; ++c) {
      const int n = t * kI8TileCols + c;
      if (n >= w.n) break;
      for (int m = 0; m < M; ++m) {
        const int8_t* xq = x.q + size_t(m) * size_t(x.kp);
        float acc = 0;
        for (int b = 0; b < nb; ++b) {
          const float xd = x.d[size_t(m) * size_t(nb) + size_t(b)];
          for (int h = 0; h < 2; ++h) {
            int32_t isum = 0;
            for (int k = 32 * b + 16 * h; k < 32 * b + 16 * h + 16; ++k) isum += code_at(tile, k, c) * int32_t(xq[k]);
            const float s = i8_scale_at(w, t, w.sb == 16 ? 2 * b + h : b, c);
            acc = std::fma(s * xd, float(isum), acc);
          }
          if (has_adds(w)) {
            const int32_t* s16 = x.s16 + size_t(m) * size_t(2 * nb) + size_t(2 * b);
            acc = std::fma(i8_add_at(w, t, b, c) * xd, float(s16[0] + s16[1]), acc);
          }
        }
        y[m * ldy + n] = acc;
      }
    }
  }
}

}  // namespace

float i8_scale_at(const I8Matrix& w, int t, int si, int c) {
  const size_t i = (size_t(t) * size_t(w.kp / w.sb) + size_t(si)) * kI8TileCols + size_t(c);
  if (!w.ksc) return w.scales[i];
  const size_t s = (size_t(t) * size_t(w.kp / 256) + size_t(si * w.sb / 256)) * kI8TileCols + size_t(c);
  return fp16_to_f32(w.kd[s]) * float(w.ksc[i]);
}

float i8_add_at(const I8Matrix& w, int t, int b, int c) {
  if (!has_adds(w)) return 0.0f;
  const size_t i = (size_t(t) * size_t(w.kp / 32) + size_t(b)) * kI8TileCols + size_t(c);
  if (!w.kmin) return w.adds[i];
  const size_t s = (size_t(t) * size_t(w.kp / 256) + size_t(b / 8)) * kI8TileCols + size_t(c);
  return -(fp16_to_f32(w.kdmin[s]) * float(w.kmin[i]));
}

void i8_dequant(const I8Matrix& w, int t0, int t1, float* out) {
  for (int t = t0; t < t1; ++t) {
    const int8_t* tile = w.qs + size_t(t) * tile_bytes(w);
    for (int c = 0; c < kI8TileCols; ++c) {
      float* row = out + (size_t(t - t0) * kI8TileCols + size_t(c)) * size_t(w.kp);
      for (int k = 0; k < w.kp; ++k) {
        float v = i8_scale_at(w, t, k / w.sb, c) * float(code_at(tile, k, c));
        if (has_adds(w)) v += i8_add_at(w, t, k / 32, c);
        row[k] = v;
      }
    }
  }
}

const I8Kernels& i8_kernels_scalar() {
  static const I8Kernels k{gemm};
  return k;
}

const I8Kernels& i8_kernels(Isa isa) {
  switch (isa) {
    case Isa::kAvx512:
      return i8_kernels_avx512();
    case Isa::kAvx2:
      return i8_kernels_avx2();
    case Isa::kScalar:
      break;
  }
  return i8_kernels_scalar();
}

const I8Kernels& i8_kernels() { return i8_kernels(checked_isa(i8_family())); }

}  // namespace metharme::kernels
