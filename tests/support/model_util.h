// Loading fixture models and collecting logits for golden comparisons.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "formats/tensor_store.h"
#include "model/llama.h"

namespace metharme::test {

struct Loaded {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<LlamaRuntime> rt;
};
// gpu_layers: RuntimeOptions::gpu_layers (GPU offload; 0 = CPU only).
Loaded load_model(const std::string& dir, int n_threads = 2, int n_ctx = 512, int n_seq = 1, int max_batch = 512,
                  int gpu_layers = 0);

// Logits for every position of ids, from one batched prefill: [ids.size()][vocab].
std::vector<float> all_logits(LlamaRuntime& rt, const std::vector<int>& ids, int seq = 0);
// The same, fed one token at a time through the KV cache (the decode path).
std::vector<float> all_logits_incremental(LlamaRuntime& rt, const std::vector<int>& ids, int seq = 0);

float max_abs_diff(const float* a, const float* b, size_t n);

// Asserts both stores hold the same names, dtypes, shapes and bytes.
void expect_same_tensors(const TensorStore& got, const TensorStore& want);

// The token ids of fixtures/models/wikitext2_test_windows.json, windows concatenated.
std::vector<int32_t> wikitext_window_ids();

// KL(P || Q) in double from two full logits rows.
double reference_kl(const std::vector<float>& p, const std::vector<float>& q);

}  // namespace metharme::test
