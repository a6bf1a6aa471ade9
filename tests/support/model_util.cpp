#include "support/model_util.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "support/test_util.h"

namespace metharme::test {

Loaded load_model(const std::string& dir, int n_threads, int n_ctx, int n_seq, int max_batch, int gpu_layers) {
  Loaded l;
  LoadOptions lo;
  lo.quiet = true;
  l.weights = load_weights(dir, lo);
  RuntimeOptions ro;
  ro.n_threads = n_threads;
  ro.n_ctx = n_ctx;
  ro.n_seq = n_seq;
  ro.max_batch = max_batch;
  ro.gpu_layers = gpu_layers;
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

void expect_same_tensors(const TensorStore& got, const TensorStore& want) {
  ASSERT_EQ(got.names(), want.names());
  for (const auto& n : want.names()) {
    const TensorView& a = got.get(n);
    const TensorView& b = want.get(n);
    EXPECT_EQ(a.dtype, b.dtype) << n;
    EXPECT_EQ(a.shape, b.shape) << n;
    ASSERT_EQ(a.nbytes, b.nbytes) << n;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << n << ": bytes differ";
  }
}

std::vector<int32_t> wikitext_window_ids() {
  auto j = read_json(fixture("models/wikitext2_test_windows.json"));
  std::vector<int32_t> ids;
  for (const auto& w : j["input_ids"])
    for (const auto& id : w) ids.push_back(id.get<int32_t>());
  return ids;
}

double reference_kl(const std::vector<float>& p, const std::vector<float>& q) {
  auto lse = [](const std::vector<float>& x) {
    double m = *std::max_element(x.begin(), x.end()), s = 0;
    for (float v : x) s += std::exp(double(v) - m);
    return m + std::log(s);
  };
  double lp0 = lse(p), lq0 = lse(q), kl = 0;
  for (size_t i = 0; i < p.size(); ++i) kl += std::exp(p[i] - lp0) * ((p[i] - lp0) - (q[i] - lq0));
  return kl;
}

}  // namespace metharme::test
