// GGUF Q8_0 / Q5_K / Q6_K linears, one thread, through ops::linear (activation preparation
// included): the int8-code kernels (kernels/i8w.h) against what those types ran as before (f16
// dense, dequantized at load) and against the int4 kernels (what Q4_0 / Q4_K run as), for decode
// (M = 1, several matrices cycled so the weights stream from DRAM) and prefill (M = 64, and 512
// except for f16).
// Shapes: N x K = 4096 x 4096 (attn) and 4096 x 11008 (ffn_down of 7B).
//   build/bench/i8_bench --benchmark_min_time=0.5
#include <benchmark/benchmark.h>

#include <memory>
#include <random>
#include <vector>

#include "kernels/isa.h"
#include "ops/i8_linear.h"
#include "ops/linear.h"
#include "ops/q4_linear.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

enum Kind { kI8Q6K = 0, kI8Q8_0 = 1, kF16 = 2, kInt4 = 3 };

ops::Linear make(Kind kind, int N, int K, uint64_t seed) {
  std::mt19937_64 rng(seed);
  if (kind == kF16) {
    ops::Linear l = ops::make_dense_linear(kernels::WType::kF16, nullptr, N, K);
    l.owned.resize(size_t(N) * size_t(K) * 2);
    for (size_t i = 0; i < l.owned.size(); i += 2) {
      const uint16_t h = f32_to_fp16(float(int(rng() % 64) - 32) * 1e-3f);
      l.owned[i] = uint8_t(h), l.owned[i + 1] = uint8_t(h >> 8);
    }
    l.dense.data = l.owned.data();
    return l;
  }
  if (kind == kInt4) {
    std::vector<uint32_t> qw(size_t(K / 8) * size_t(N)), qz(size_t(K / 32) * size_t(N / 8), 0x77777777u);
    for (auto& v : qw) v = uint32_t(rng());
    std::vector<uint16_t> sc(size_t(K / 32) * size_t(N), f32_to_fp16(0.004f));
    ops::GptqSource s;
    s.n = N, s.k = K, s.n_groups = K / 32, s.group_size = 32;
    s.qweight = qw.data(), s.qzeros = qz.data(), s.scales = sc.data();
    ops::Linear l;
    l.kind = ops::Linear::Kind::kQ4;
    l.n_out = N, l.n_in = K, l.q4 = ops::q4_repack(s, 1);
    return l;
  }
  auto w = ops::i8_alloc(N, K, kind == kI8Q6K ? 16 : 32, false, kind == kI8Q6K ? "q6_k" : "q8_0");
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      const int c = kind == kI8Q6K ? int(rng() % 64) - 32 : int(rng() % 255) - 127;
      ops::i8_set_code(*w, n, k, int8_t(c));
      ops::i8_scale(*w, n, k) = 0.001f;
    }
  ops::i8_finish(*w);
  ops::Linear l;
  l.kind = ops::Linear::Kind::kI8;
  l.n_out = N, l.n_in = K, l.i8 = w;
  return l;
}

// args: kind, isa, M, N, K, matrices cycled
void BM_GgufLinear(benchmark::State& st) {
  const auto kind = Kind(st.range(0));
  const auto isa = kernels::Isa(st.range(1));
  const int M = int(st.range(2)), N = int(st.range(3)), K = int(st.range(4)), n_mats = int(st.range(5));
  if (!kernels::isa_supported(isa)) {
    st.SkipWithError("ISA not supported on this CPU");
    return;
  }
  kernels::set_active_isa(isa);
  ops::set_q4_act(ops::Q4Act::kQ8);
  std::vector<ops::Linear> mats;
  for (int i = 0; i < n_mats; ++i) mats.push_back(make(kind, N, K, uint64_t(i + 1)));
  std::vector<float> x(size_t(M) * size_t(K), 0.5f), y(size_t(M) * size_t(N));
  ThreadPool pool(1);
  int i = 0;
  for (auto _ : st) {
    ops::linear(mats[size_t(i)], x.data(), M, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % n_mats;
  }
  st.counters["wGB/s"] =
      benchmark::Counter(double(mats[0].weight_bytes()) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["GMAC/s"] = benchmark::Counter(double(M) * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["B/weight"] = double(mats[0].weight_bytes()) / (double(N) * K);
  ops::set_q4_act(ops::Q4Act::kAuto);
}

void args(benchmark::internal::Benchmark* b) {
  for (int isa : {1, 2})
    for (int kind : {kI8Q6K, kI8Q8_0, kF16, kInt4})
      for (auto [N, K] : {std::pair{4096, 4096}, std::pair{4096, 11008}}) {
        b->Args({kind, isa, 1, N, K, N == K ? 8 : 4});
        b->Args({kind, isa, 64, N, K, 1});
        if (kind != kF16) b->Args({kind, isa, 512, N, K, 1});  // a 512-token prefill
      }
}
BENCHMARK(BM_GgufLinear)
    ->Apply(args)
    ->ArgNames({"kind", "isa", "M", "N", "K", "mats"})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace metharme

BENCHMARK_MAIN();
