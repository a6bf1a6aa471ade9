// Prefill attention at LLaMA-7B shape (32 heads x 128, T tokens in one sequence): the order in
// which (token, kv head) tasks are handed to the pool. Token-major reads every head's K/V for each
// token (T x 2 MB per head, 64 MB for all heads at T = 2048: more than the L3); head-major keeps one
// head's K/V in cache while all tokens use it. The prefill tiles LlamaRuntime::attention
// runs for a one-sequence prefill are measured in kv_attention_bench.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <random>

#include "formats/hf_config.h"
#include "model/kv_cache.h"
#include "ops/attention.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

// One 7B-shaped layer (32 heads of 128, no GQA) with T random keys/values cached and T random
// query rows: the input of a T-token prefill's attention.
struct Prefill {
  LlamaConfig c;
  KvCache kv;
  std::vector<float> q, out;
  static LlamaConfig config() {
    LlamaConfig c;
    c.hidden_size = 4096;
    c.num_attention_heads = c.num_key_value_heads = 32;
    c.head_dim = 128;
    c.num_hidden_layers = 1;
    return c;
  }
  explicit Prefill(int T)
      : c(config()), kv(c, T, 1, kernels::KvType::kF32, kernels::KvType::kF32), q(size_t(T) * 4096), out(q.size()) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd(0, 1);
    std::vector<float> k(4096), v(4096);
    for (int p = 0; p < T; ++p) {
      for (int i = 0; i < 4096; ++i) k[size_t(i)] = nd(rng), v[size_t(i)] = nd(rng);
      kv.store(0, 0, p, k.data(), v.data());
    }
    for (auto& x : q) x = nd(rng);
  }
};

void BM_PrefillAttention(benchmark::State& state) {
  const int T = int(state.range(0));
  const bool head_major = state.range(1) != 0;
  Prefill P(T);
  KvCache& kv = P.kv;
  std::vector<float>& q = P.q;
  std::vector<float>& out = P.out;
  ThreadPool pool(default_thread_count());
  const size_t wf = ops::decode_work_floats(1, 128);
  std::vector<float> work(size_t(pool.size()) * wf);
  const int H = 32;
  for (auto _ : state) {
    pool.run(T * H, [&](int task, int thread) {
      const int i = head_major ? task % T : task / H, g = head_major ? task / T : task % H;
      const size_t off = size_t(i) * 4096 + size_t(g) * 128;
      ops::attend_group(q.data() + off, g, 1, 128, kv.slice(0, 0), i + 1, out.data() + off,
                        work.data() + size_t(thread) * wf);
    });
    benchmark::DoNotOptimize(out.data());
  }
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * 2.0 * double(T) * double(T + 1) / 2 * 4096,
                                                 benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_PrefillAttention)
    ->ArgNames({"T", "head_major"})
    ->Args({512, 0})
    ->Args({512, 1})
    ->Args({2048, 0})
    ->Args({2048, 1})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace metharme

int main(int argc, char** argv) {
  openblas_set_num_threads(1);  // our pool splits the work, as in the runtime
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
