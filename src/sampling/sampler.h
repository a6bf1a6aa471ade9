// Turning logits into the next token: KoboldAI's samplers, applied in a configurable order.
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace metharme {

// KoboldAI sampler settings (../shared/docs/kobold-api.md section 5). Each sampler is off at its
// neutral value. sampler_order ids: 0 top-k, 1 top-a, 2 top-p, 3 tail-free, 4 typical,
// 5 temperature, 6 repetition penalty.
struct SamplerParams {
  float temperature = 0.8f;  // <= 0: greedy (argmax)
  int top_k = 0;             // 0: off
  float top_a = 0.0f;        // 0: off
  float top_p = 1.0f;        // 1: off
  float min_p = 0.0f;        // 0: off (KoboldCpp extension)
  float typical = 1.0f;      // 1: off
  float tfs = 1.0f;          // 1: off
  float rep_pen = 1.0f;      // 1: off
  int rep_pen_range = 0;     // tokens of history penalized; 0: all
  float rep_pen_slope = 1.0f;
  std::vector<int> sampler_order{6, 0, 1, 3, 4, 2, 5};
  std::vector<int> banned_tokens;  // never sampled
  bool ban_eos = false;            // EOS never sampled
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
