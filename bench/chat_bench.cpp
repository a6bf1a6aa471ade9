// Per-token sampler cost on a LLaMA-sized vocabulary, and the cost of shifting a 7B-shaped KV
// cache (what a chat pays instead of re-evaluating the kept turns when old ones scroll out).
#include <benchmark/benchmark.h>

#include <random>

#include "model/kv_cache.h"
#include "sampling/sampler.h"

namespace metharme {
namespace {

constexpr int kVocab = 32000;

std::vector<float> random_logits(uint32_t seed) {
  std::mt19937 g(seed);
  std::normal_distribution<float> d(0, 3);
  std::vector<float> l(kVocab);
  for (float& v : l) v = d(g);
  return l;
}

std::vector<int> random_history(int n) {
  std::mt19937 g(1);
  std::uniform_int_distribution<int> d(3, kVocab - 1);
  std::vector<int> h(static_cast<size_t>(n));
  for (int& v : h) v = d(g);
  return h;
}

// Fresh logits on every draw (16 sets in turn), as in generation: on one repeated set the branch
// predictor learns the selection's comparisons and the figure comes out several times too fast.
void run_sampler(benchmark::State& state, const SamplerParams& p) {
  std::vector<std::vector<float>> logits;
  for (uint32_t i = 0; i < 16; ++i) logits.push_back(random_logits(7 + i));
  auto hist = random_history(1024);
  Sampler s(p, kVocab);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(s.sample(logits[i++ % logits.size()].data(), hist));
}

// KoboldAI Lite's defaults: rep-pen 1.07 over 360 tokens, top-k 100, top-p 0.92, T 0.7.
void BM_SamplerLiteDefaults(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 0.7f;
  p.top_k = 100;
  p.top_p = 0.92f;
  p.rep_pen = 1.07f;
  p.rep_pen_range = 360;
  p.rep_pen_slope = 0.7f;
  run_sampler(state, p);
}
BENCHMARK(BM_SamplerLiteDefaults);

// An OpenAI-style request: temperature only (every serve stream draws this way in bench/serve_load.mjs).
void BM_SamplerTemperatureOnly(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 0.7f;
  run_sampler(state, p);
}
BENCHMARK(BM_SamplerTemperatureOnly);

void BM_SamplerGreedy(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 0;
  run_sampler(state, p);
}
BENCHMARK(BM_SamplerGreedy);

// No top-k in front: top-p, tail-free and typical sort the whole vocabulary.
void BM_SamplerFullVocabulary(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 0.8f;
  p.top_p = 0.95f;
  p.tfs = 0.95f;
  p.typical = 0.95f;
  p.min_p = 0.02f;
  run_sampler(state, p);
}
BENCHMARK(BM_SamplerFullVocabulary);

// A 7B-shaped cache (32 layers, 32 kv heads of 128) in fp16: move `count` positions down by 256.
void BM_KvShift7B(benchmark::State& state) {
  const int count = int(state.range(0));
  LlamaConfig c;
  c.num_hidden_layers = 32;
  c.num_attention_heads = c.num_key_value_heads = 32;
  c.head_dim = 128;
  KvCache kv(c, 2048, 1, kernels::WType::kF16);
  for (auto _ : state) kv.shift(0, 256, 0, count, 10000.0);
  state.counters["tokens/s"] = benchmark::Counter(double(count), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_KvShift7B)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace metharme

BENCHMARK_MAIN();
