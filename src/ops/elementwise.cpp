#include "ops/elementwise.h"

#include <cmath>

#include "kernels/dense.h"
#include "util/fast_exp.h"

namespace metharme::ops {

void rmsnorm(const float* x, const float* w, float eps, int n, float* out) {
  double ss = 0;
  for (int i = 0; i < n; ++i) ss += double(x[i]) * double(x[i]);
  float inv = float(1.0 / std::sqrt(ss / n + double(eps)));
  for (int i = 0; i < n; ++i) out[i] = w[i] * (x[i] * inv);
}

void silu_mul(float* a, const float* b, int n) { kernels::dense_kernels().silu_mul(a, b, n); }

void add(float* y, const float* x, int n) {
  for (int i = 0; i < n; ++i) y[i] += x[i];
}

float softmax(float* x, int n, float scale) {
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) {
    x[i] *= scale;
    mx = std::max(mx, x[i]);
  }
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    x[i] = exp_fast_edges(x[i] - mx);
    sum += x[i];
  }
  float inv = float(1.0 / sum);
  for (int i = 0; i < n; ++i) x[i] *= inv;
  return float(std::log(sum));
}

double logsumexp(const float* x, int n) {
  float mx = -INFINITY;
  for (int i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += std::exp(double(x[i]) - double(mx));
  return double(mx) + std::log(sum);
}

}  // namespace metharme::ops
