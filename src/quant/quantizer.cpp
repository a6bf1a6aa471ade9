#include "quant/quantizer.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"
#include "util/half.h"

namespace metharme::quant {

Grid make_grid(float lo, float hi, const QuantConfig& c) {
  const float maxq = float(c.maxq());
  float xmin = std::min(lo, 0.0f), xmax = std::max(hi, 0.0f);
  if (c.sym) {
    xmax = std::max(std::fabs(xmin), xmax);
    if (xmin < 0) xmin = -xmax;
  }
  if (xmin == 0 && xmax == 0) {
    xmin = -1;
    xmax = 1;
  }
  Grid g;
  g.scale = (xmax - xmin) / maxq;
  if (c.sym) {
    g.zero = (maxq + 1) / 2;
  } else {
    g.zero = std::nearbyint(-xmin / g.scale);
    if (c.zero_at_least_one && g.zero < 1) g.zero = 1;
  }
  return g;
}

QuantizedLinear rtn_quantize(const float* W, int N, int K, const QuantConfig& c, ThreadPool& pool) {
  QuantizedLinear q;
  q.n_out = N;
  q.n_in = K;
  q.group_size = c.group_size > 0 ? c.group_size : K;
  MH_CHECK(K % q.group_size == 0, "group size ", q.group_size, " does not divide the input size ", K);
  q.n_groups = K / q.group_size;
  q.codes.resize(size_t(K) * size_t(N));
  q.scales.resize(size_t(q.n_groups) * size_t(N));
  q.zeros.resize(q.scales.size());
  q.g_idx.resize(size_t(K));
  for (int k = 0; k < K; ++k) q.g_idx[size_t(k)] = k / q.group_size;
  const int maxq = c.maxq(), gs = q.group_size;
  std::vector<double> loss(static_cast<size_t>(N));
  pool.parallel_for(N, 1, [&](int64_t n0, int64_t n1, int) {
    for (int64_t n = n0; n < n1; ++n) {
      const float* w = W + n * K;
      double l = 0;
      for (int g = 0; g < q.n_groups; ++g) {
        const float* wg = w + int64_t(g) * gs;
        auto [lo, hi] = std::minmax_element(wg, wg + gs);
        Grid grid = make_grid(*lo, *hi, c);
        q.scales[size_t(g) * size_t(N) + size_t(n)] = grid.scale;
        q.zeros[size_t(g) * size_t(N) + size_t(n)] = uint8_t(grid.zero);
        for (int j = 0; j < gs; ++j) {
          int code = quant_code(wg[j], grid, maxq);
          q.codes[size_t(g * gs + j) * size_t(N) + size_t(n)] = uint8_t(code);
          float e = wg[j] - grid.scale * (float(code) - grid.zero);
          l += double(e) * double(e);
        }
      }
      loss[size_t(n)] = l;
    }
  });
  for (double l : loss) q.loss += l;
  return q;
}

void dequantize(const QuantizedLinear& q, bool fp16_scales, float* W) {
  const size_t N = size_t(q.n_out);
  std::vector<float> s(q.scales);
  if (fp16_scales)
    for (float& x : s) x = fp16_to_f32(f32_to_fp16(x));
  for (int k = 0; k < q.n_in; ++k) {
    const size_t g = size_t(q.g_idx[size_t(k)]);
    const uint8_t* codes = q.codes.data() + size_t(k) * N;
    for (size_t n = 0; n < N; ++n)
      W[n * size_t(q.n_in) + size_t(k)] = s[g * N + n] * (float(codes[n]) - float(q.zeros[g * N + n]));
  }
}

double rel_weight_error(const float* W, const float* Wq, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    double d = double(W[i]) - double(Wq[i]);
    num += d * d;
    den += double(W[i]) * double(W[i]);
  }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

}  // namespace metharme::quant
