// Loading fixture models and collecting logits for golden comparisons.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"

namespace metharme::test {

struct Loaded {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<LlamaRuntime> rt;
};
Loaded load_model(const std::string& dir, int n_threads = 2, int n_ctx = 512, int n_seq = 1, int max_batch = 512);

// Logits for every position of ids, from one batched prefill: [ids.size()][vocab].
std::vector<float> all_logits(LlamaRuntime& rt, const std::vector<int>& ids, int seq = 0);
// The same, fed one token at a time through the KV cache (the decode path).
std::vector<float> all_logits_incremental(LlamaRuntime& rt, const std::vector<int>& ids, int seq = 0);

float max_abs_diff(const float* a, const float* b, size_t n);

}  // namespace metharme::test
