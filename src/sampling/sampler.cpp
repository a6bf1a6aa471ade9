#include "sampling/sampler.h"

#include <cmath>

namespace metharme {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

Sampler::Sampler(const SamplerParams& p, int n_vocab) : p_(p), rng_(p.seed), probs_(size_t(n_vocab)) {}

int Sampler::sample(const float* logits, const std::vector<int>&) {
  const int n = int(probs_.size());
  if (p_.temperature <= 0) return argmax(logits, n);
  float mx = logits[argmax(logits, n)];
  double sum = 0;
  for (int i = 0; i < n; ++i) {
    probs_[size_t(i)] = std::exp((logits[i] - mx) / p_.temperature);
    sum += probs_[size_t(i)];
  }
  // Uniform in [0, sum) from the top 53 bits: the same on every platform.
  double r = double(rng_() >> 11) * 0x1.0p-53 * sum;
  for (int i = 0; i < n; ++i) {
    r -= probs_[size_t(i)];
    if (r < 0) return i;
  }
  return n - 1;
}

}  // namespace metharme
