// Per-token sampler cost on a LLaMA-sized vocabulary, and the cost of shifting a 7B-shaped KV
// cache (what a chat pays instead of re-evaluating the kept turns when old ones scroll out).
#include <benchmark/benchmark.h>

#include <fstream>
#include <random>

#include "chat/dry_breakers.h"
#include "model/kv_cache.h"
#include "sampling/dry.h"
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

// A history that repeats itself: a 40-token phrase again and again with a changed token now and
// then, so DRY finds long repeats (its worst case); random tokens rarely repeat.
std::vector<int> looping_history(int n) {
  std::mt19937 g(2);
  std::uniform_int_distribution<int> d(3, kVocab - 1);
  std::vector<int> phrase(40);
  for (int& v : phrase) v = d(g);
  std::vector<int> h(static_cast<size_t>(n));
  for (size_t i = 0; i < h.size(); ++i) h[i] = i % 97 == 0 ? d(g) : phrase[i % phrase.size()];
  return h;
}

// Lite's defaults plus its DRY settings (0.8, 1.75, 2) over the whole context, with four one-token
// breakers, on a 1024-token history that loops.
void BM_SamplerLiteDefaultsDry(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 0.7f;
  p.top_k = 100;
  p.top_p = 0.92f;
  p.rep_pen = 1.07f;
  p.rep_pen_range = 360;
  p.rep_pen_slope = 0.7f;
  p.dry_multiplier = 0.8f;
  p.dry_penalty_last_n = 0;
  p.dry_breakers = {{13}, {29901}, {29908}, {29930}};
  std::vector<std::vector<float>> logits;
  for (uint32_t i = 0; i < 16; ++i) logits.push_back(random_logits(7 + i));
  auto hist = looping_history(1024);
  Sampler s(p, kVocab);
  size_t i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(s.sample(logits[i++ % logits.size()].data(), hist));
}
BENCHMARK(BM_SamplerLiteDefaultsDry);

// DRY's own work per token on a looping history of `range` tokens (the penalties, not the draw).
void BM_DryPenalties(benchmark::State& state) {
  auto hist = looping_history(int(state.range(0)));
  Dry dry(0.8f, 1.75f, 2, 0, {{13}, {29901}, {29908}, {29930}});
  for (auto _ : state) benchmark::DoNotOptimize(dry.penalties(hist, 0).size());
}
BENCHMARK(BM_DryPenalties)->Arg(320)->Arg(2048)->Arg(8192);

// Every KoboldCpp sampler at once: DRY, dynamic temperature, smoothing, top-n-sigma, XTC.
void BM_SamplerEveryKcppSampler(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.dry_multiplier = 0.8f;
  p.dry_penalty_last_n = 0;
  p.dynatemp_range = 0.5f;
  p.smoothing_factor = 0.3f;
  p.nsigma = 1.5f;
  p.xtc_probability = 0.5f;
  p.xtc_threshold = 0.1f;
  run_sampler(state, p);
}
BENCHMARK(BM_SamplerEveryKcppSampler);

void BM_SamplerMirostat2(benchmark::State& state) {
  SamplerParams p;
  p.temperature = 1.0f;
  p.mirostat = 2;
  run_sampler(state, p);
}
BENCHMARK(BM_SamplerMirostat2);

// A request's one-off cost of turning 4 breaker strings into sequences over a 32000-token
// vocabulary (token texts of 1-8 letters, as in LLaMA's).
void BM_DryBreakerSequences(benchmark::State& state) {
  std::mt19937 g(3);
  std::vector<std::string> text(kVocab);
  for (auto& t : text) {
    t.resize(1 + g() % 8);
    for (char& ch : t) ch = char(' ' + g() % 95);
  }
  auto tt = [&](int id) { return text[size_t(id)]; };
  auto enc = [](const std::string& s) { return std::vector<int>(s.size(), 5); };
  for (auto _ : state) benchmark::DoNotOptimize(dry_breaker_sequences({"\n", ":", "\"", "*"}, kVocab, tt, enc).size());
}
BENCHMARK(BM_DryBreakerSequences)->Unit(benchmark::kMillisecond);

// The same on the LLaMA tokenizer of the shared fixtures (run from the repository root): SillyTavern's
// four default breakers, and 24 one-letter breakers (the most a request may send, and about the
// worst: every token holding the letter becomes a breaker).
void BM_DryBreakersLlamaTokenizer(benchmark::State& state) {
  const char* path = "../shared/fixtures/tokenizer/llama/tokenizer.model";
  if (!std::ifstream(path)) return state.SkipWithError("run from the repository root (needs ../shared)");
  Tokenizer tok(path);
  std::vector<std::string> breakers = {"\n", ":", "\"", "*"};
  if (state.range(0) == 24) {
    breakers.clear();
    for (char c : std::string("eaointsrhldcumpgywfbkvxz")) breakers.push_back(std::string(1, c));
  }
  for (auto _ : state) benchmark::DoNotOptimize(dry_breakers_for(tok, breakers).size());
}
BENCHMARK(BM_DryBreakersLlamaTokenizer)->Arg(4)->Arg(24)->Unit(benchmark::kMillisecond);

// A 7B-shaped cache (32 layers, 32 kv heads of 128) in fp16: move `count` positions down by 256.
void BM_KvShift7B(benchmark::State& state) {
  const int count = int(state.range(0));
  LlamaConfig c;
  c.num_hidden_layers = 32;
  c.num_attention_heads = c.num_key_value_heads = 32;
  c.head_dim = 128;
  KvCache kv(c, 2048, 1, kernels::KvType::kF16, kernels::KvType::kF16);
  const ops::RopeTable rope(c.head_dim, 10000.0, 2048);
  for (auto _ : state) kv.shift(0, 256, 0, count, rope);
  state.counters["tokens/s"] = benchmark::Counter(double(count), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_KvShift7B)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace metharme

BENCHMARK_MAIN();
