// Pieces of `metharme quantize` at LLaMA-7B shapes, to ground the per-layer figures in
// bench/RESULTS.md: the sgemm ceiling of this machine, Hessian accumulation (one 2048-token window)
// and the GPTQ solve of one linear (Cholesky steps + blocked sweep).
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <random>

#include "quant/gptq.h"
#include "util/thread_pool.h"

namespace metharme::quant {
namespace {

std::vector<float> randn(size_t n, unsigned seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

// C[M][N] = A[M][K] B[N][K]^T split over our pool by column panels (as ops::linear does).
void BM_Sgemm(benchmark::State& state) {
  const int M = 2048, N = 4096, K = 4096;
  auto a = randn(size_t(M) * K, 1), b = randn(size_t(N) * K, 2);
  std::vector<float> c(size_t(M) * N);
  ThreadPool pool(default_thread_count());
  for (auto _ : state)
    pool.parallel_for(N, 64, [&](int64_t n0, int64_t n1, int) {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, int(n1 - n0), K, 1.0f, a.data(), K,
                  b.data() + n0 * K, K, 0.0f, c.data() + n0, N);
    }, 4);
  state.counters["GFLOP/s"] = benchmark::Counter(2.0 * M * N * K, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Sgemm)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_HessianAdd(benchmark::State& state) {
  const int K = int(state.range(0)), T = 2048;
  auto x = randn(size_t(T) * K, 3);
  ThreadPool pool(default_thread_count());
  Hessian h(K);
  for (auto _ : state) h.add(x.data(), T, pool);
  // Upper-triangle tiles: about K^2/2 (plus diagonal tiles) dot products of length T.
  state.counters["GFLOP/s"] =
      benchmark::Counter(double(K) * (K + 256) * T, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_HessianAdd)->ArgName("K")->Arg(4096)->Arg(11008)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_GptqSolve(benchmark::State& state) {
  const int N = int(state.range(0)), K = int(state.range(1));
  auto W = randn(size_t(N) * K, 4, 0.02f);
  // A Hessian from 1024 random rows (rank-deficient: damping makes it positive definite, as
  // with a short calibration).
  ThreadPool pool(default_thread_count());
  Hessian hs(K);
  auto x = randn(size_t(1024) * K, 5);
  hs.add(x.data(), 1024, pool);
  const std::vector<float> H0 = hs.finish();
  QuantConfig c;
  c.group_size = 128;
  c.act_order = true;
  for (auto _ : state) {
    state.PauseTiming();
    std::vector<float> H = H0;
    state.ResumeTiming();
    benchmark::DoNotOptimize(gptq_quantize(W.data(), N, K, H, c, pool, pool.size()).loss);
  }
}
BENCHMARK(BM_GptqSolve)->ArgNames({"N", "K"})->Args({4096, 4096})->Args({11008, 4096})->Args({4096, 11008})
    ->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace
}  // namespace metharme::quant

int main(int argc, char** argv) {
  openblas_set_num_threads(1);  // our pool splits the work, as in metharme quantize
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
