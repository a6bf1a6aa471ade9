// Batched decoding as `metharme serve` runs it, without HTTP:
//   BM_DecodeStep/streams:N   one forward() carrying the next token of N sequences (tokens/s)
//   BM_EngineStreams/streams:N  N requests of 32 tokens through serve::Engine (aggregate tokens/s)
// The model is METHARME_BENCH_MODEL (default: the random LLaMA fixture); make a 1B-shape one with
//   metharme synth --shape 1b --tokenizer ../shared/fixtures/tokenizer/llama/tokenizer.model -o /tmp/synth-1b
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <memory>

#include "model/llama.h"
#include "serve/engine.h"
#include "tokenizer/tokenizer.h"

namespace metharme {
namespace {

struct Model {
  std::unique_ptr<ModelWeights> w;
  std::unique_ptr<LlamaRuntime> rt;
  std::unique_ptr<Tokenizer> tok;
};

Model& model() {
  static Model m = [] {
    const char* dir = std::getenv("METHARME_BENCH_MODEL");
    std::string d = dir ? dir : std::string(METHARME_SHARED) + "/fixtures/models/llama-rand-h256";
    Model m;
    LoadOptions lo;
    lo.quiet = true;
    m.w = load_weights(d, lo);
    RuntimeOptions ro;
    ro.n_ctx = 256;
    ro.n_seq = 8;
    ro.kv_type_k = ro.kv_type_v = kernels::KvType::kF16;
    m.rt = std::make_unique<LlamaRuntime>(*m.w, ro);
    m.tok = std::make_unique<Tokenizer>(Tokenizer::from_folder(d));
    return m;
  }();
  return m;
}

void BM_DecodeStep(benchmark::State& state) {
  Model& m = model();
  const int n = int(state.range(0));
  std::vector<BatchToken> batch;
  std::vector<float> logits(size_t(n) * size_t(m.rt->n_vocab()));
  // A 32-token history in every sequence, then one new token each per step.
  std::vector<BatchToken> prefill;
  for (int s = 0; s < n; ++s)
    for (int p = 0; p < 32; ++p) prefill.push_back({100 + p + s, p, s, false});
  m.rt->forward(prefill, nullptr);
  for (int s = 0; s < n; ++s) batch.push_back({500 + s, 32, s, true});
  for (auto _ : state) m.rt->forward(batch, logits.data());
  state.counters["tok/s"] = benchmark::Counter(double(n) * double(state.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_DecodeStep)->ArgName("streams")->Arg(1)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_EngineStreams(benchmark::State& state) {
  Model& m = model();
  const int n = int(state.range(0));
  serve::Engine engine(*m.rt, *m.tok, serve::EngineOptions{8, 128});
  std::vector<serve::GenSpec> specs(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) {
    specs[size_t(i)].prompt = m.tok->encode("Once upon a time " + std::to_string(i), true);
    specs[size_t(i)].max_new = 32;
    specs[size_t(i)].stop_at_eos = false;
    specs[size_t(i)].sampler.temperature = 0.7f;
    specs[size_t(i)].sampler.seed = uint64_t(i);
  }
  int64_t tokens = 0;
  for (auto _ : state) {
    auto jobs = engine.submit(specs);
    for (auto& j : jobs) {
      while (!j->done()) j->wait(j->text().size(), std::chrono::milliseconds(50));
      tokens += j->stats().generated;
    }
  }
  state.counters["tok/s"] = benchmark::Counter(double(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_EngineStreams)->ArgName("streams")->Arg(1)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace
}  // namespace metharme

BENCHMARK_MAIN();
