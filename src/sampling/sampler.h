// Turning logits into the next token: KoboldAI's samplers, applied in a configurable order.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace metharme {

struct SamplerParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax)
  uint64_t seed = 0;
};

class Sampler {
 public:
  Sampler(const SamplerParams& p, int n_vocab);
  // Picks the next token from logits[n_vocab]. `history`: tokens so far (for penalties).
  int sample(const float* logits, const std::vector<int>& history);
  const SamplerParams& params() const { return p_; }

 private:
  SamplerParams p_;
  std::mt19937_64 rng_;
  std::vector<float> probs_;
};

int argmax(const float* x, int n);

}  // namespace metharme
