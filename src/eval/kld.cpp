#include "eval/kld.h"

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"

namespace metharme::eval {

RowSummary summarize_row(const float* logits, int n) {
  RowSummary s;
  s.argmax = int32_t(std::max_element(logits, logits + n) - logits);
  s.lse = ops::logsumexp(logits, n);
  return s;
}

double kl_divergence(const float* p, double p_lse, const float* q, double q_lse, int n) {
  double sum = 0;
  for (int v = 0; v < n; ++v) {
    double lp = double(p[v]) - p_lse;
    double lq = double(q[v]) - q_lse;
    sum += std::exp(lp) * (lp - lq);
  }
  return sum;
}

double percentile_sorted(const std::vector<float>& sorted, double q) {
  if (sorted.empty()) return 0;
  double pos = q * double(sorted.size() - 1);
  size_t lo = size_t(std::floor(pos));
  size_t hi = std::min(lo + 1, sorted.size() - 1);
  double frac = pos - double(lo);
  return double(sorted[lo]) + (double(sorted[hi]) - double(sorted[lo])) * frac;
}

KldSummary summarize_kld(std::vector<float> values, int64_t top1_same) {
  KldSummary s;
  s.count = int64_t(values.size());
  if (values.empty()) return s;
  double sum = 0;
  for (float v : values) sum += double(v);
  s.mean = sum / double(values.size());
  std::sort(values.begin(), values.end());
  s.median = percentile_sorted(values, 0.5);
  s.p99 = percentile_sorted(values, 0.99);
  s.max = double(values.back());
  s.top1_agreement = double(top1_same) / double(values.size());
  return s;
}

}  // namespace metharme::eval
