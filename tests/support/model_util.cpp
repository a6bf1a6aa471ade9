#include "support/model_util.h"

#include <cmath>
#include <cstring>

namespace metharme::test {

Loaded load_model(const std::string& dir, int n_threads, int n_ctx, int n_seq, int max_batch) {
  Loaded l;
  LoadOptions lo;
  lo.quiet = true;
  l.weights = load_weights(dir, lo);
  RuntimeOptions ro;
  ro.n_threads = n_threads;
  ro.n_ctx = n_ctx;
  ro.n_seq = n_seq;
  ro.max_batch = max_batch;
  l.rt = std::make_unique<LlamaRuntime>(*l.weights, ro);
  return l;
}

std::vector<float> all_logits(LlamaRuntime& rt, const std::vector<int>& ids, int seq) {
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < ids.size(); ++i) batch.push_back({ids[i], int32_t(i), seq, true});
  std::vector<float> out(ids.size() * size_t(rt.n_vocab()));
  rt.forward(batch, out.data());
  return out;
}

std::vector<float> all_logits_incremental(LlamaRuntime& rt, const std::vector<int>& ids, int seq) {
  std::vector<float> out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const float* l = rt.eval(std::span<const int>(&ids[i], 1), int(i), seq);
    out.insert(out.end(), l, l + rt.n_vocab());
  }
  return out;
}

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) {
    float d = std::fabs(a[i] - b[i]);
    if (!(d <= m)) m = std::isnan(d) ? INFINITY : d;
  }
  return m;
}

}  // namespace metharme::test
