// Int4 kernel microbenchmarks, one thread: the int8-activation design (q8) against the fp32
// design (f32: codes converted in registers; for M >= 8 also fp32 panels + OpenBLAS sgemm), per
// ISA, for decode (M = 1), small batches (M = 2..8, continuous batching) and prefill (M = 512).
// Decode runs stream a working set larger than the L3 (the weights of several 7B matrices) so
// they measure what decode meets: DRAM. Counters: GMAC/s and weight GB/s.
//   build/bench/q4_bench --benchmark_filter=... --benchmark_min_time=1
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <memory>
#include <random>
#include <vector>

#include "kernels/dense.h"
#include "kernels/q4.h"
#include "ops/linear.h"
#include "ops/q4_linear.h"
#include "util/thread_pool.h"
#include "util/half.h"

namespace metharme {
namespace {

struct Mat {
  std::vector<uint32_t> qweight, qzeros;
  std::vector<uint16_t> scales;
  std::shared_ptr<ops::Q4Weight> w;
};

std::unique_ptr<Mat> make_mat(int N, int K, int gs, uint64_t seed) {
  auto m = std::make_unique<Mat>();
  std::mt19937_64 rng(seed);
  m->qweight.resize(size_t(K / 8) * size_t(N));
  for (auto& v : m->qweight) v = uint32_t(rng());
  const int G = K / gs;
  m->qzeros.resize(size_t(G) * size_t(N / 8));
  for (auto& v : m->qzeros) v = 0x77777777u;
  m->scales.assign(size_t(G) * size_t(N), f32_to_fp16(0.004f));
  ops::GptqSource s;
  s.n = N;
  s.k = K;
  s.n_groups = G;
  s.group_size = gs;
  s.qweight = m->qweight.data();
  s.qzeros = m->qzeros.data();
  s.scales = m->scales.data();
  m->w = ops::q4_repack(s, 1);
  m->qweight = {};
  return m;
}

struct Acts {
  std::vector<float> xf, gsum, xd;
  std::vector<int8_t> xq;
  std::vector<int32_t> xs;
  Acts(const ops::Q4Weight& w, int M) {
    std::mt19937 rng(1);
    std::normal_distribution<float> nd;
    const int kp = w.mat.kp, nb = kp / w.block;
    xf.resize(size_t(M) * size_t(kp));
    for (auto& v : xf) v = nd(rng);
    gsum.assign(size_t(M) * size_t(w.mat.n_groups), 1.0f);
    xq.resize(xf.size());
    xd.resize(size_t(M) * size_t(nb));
    xs.resize(xd.size());
    for (int m = 0; m < M; ++m)
      kernels::q4_kernels().quantize_q8(&xf[size_t(m) * size_t(kp)], kp, w.block, &xq[size_t(m) * size_t(kp)],
                                        &xd[size_t(m) * size_t(nb)], &xs[size_t(m) * size_t(nb)]);
  }
};

enum Design { kQ8 = 0, kF32 = 1, kF32Sgemm = 2 };
constexpr int kAmx = 3;  // BM_Q4 isa argument: the AMX product (kernels::q4_gemm_q8_amx_unchecked)

// args: design, isa, M, N, K, number of distinct matrices cycled through
void BM_Q4(benchmark::State& st) {
  const auto design = Design(st.range(0));
  const bool amx = st.range(1) == kAmx;  // the AMX product (q8 only)
  const auto isa = amx ? kernels::Isa::kAvx512 : kernels::Isa(st.range(1));
  const int M = int(st.range(2)), N = int(st.range(3)), K = int(st.range(4)), n_mats = int(st.range(5));
  if (amx && !kernels::amx_supported()) {
    st.SkipWithError("no AMX on this CPU or kernel");
    return;
  }
  if (!kernels::isa_supported(isa)) {
    st.SkipWithError("ISA not supported on this CPU");
    return;
  }
  openblas_set_num_threads(1);
  std::vector<std::unique_ptr<Mat>> mats;
  for (int i = 0; i < n_mats; ++i) mats.push_back(make_mat(N, K, 128, uint64_t(i) + 1));
  const ops::Q4Weight& w0 = *mats[0]->w;
  Acts a(w0, M);
  std::vector<float> y(size_t(M) * size_t(N)), panel;
  const auto& k = kernels::q4_kernels(isa);
  if (design == kF32Sgemm) panel.resize(size_t(64) * size_t(w0.mat.kp));
  int i = 0;
  for (auto _ : st) {
    const ops::Q4Weight& w = *mats[size_t(i++ % n_mats)]->w;
    if (amx) {
      kernels::q4_gemm_q8_amx_unchecked()(w.mat, {a.xq.data(), a.xd.data(), a.xs.data(), w.mat.kp, w.block}, M, 0,
                                          w.mat.n_tiles, y.data(), N);
    } else if (design == kQ8) {
      k.gemm_q8(w.mat, {a.xq.data(), a.xd.data(), a.xs.data(), w.mat.kp, w.block}, M, 0, w.mat.n_tiles, y.data(), N);
    } else if (design == kF32) {
      k.gemm_f32(w.mat, {a.xf.data(), a.gsum.data(), w.mat.kp, w.mat.n_groups}, M, 0, w.mat.n_tiles, y.data(), N);
    } else {
      for (int t = 0; t < w.mat.n_tiles; t += 4) {
        k.dequant(w.mat, t, t + 4, panel.data());
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, 64, w.mat.kp, 1.0f, a.xf.data(), w.mat.kp, panel.data(),
                    w.mat.kp, 0.0f, y.data() + t * 16, N);
      }
    }
    benchmark::DoNotOptimize(y.data());
  }
  const double macs = double(M) * N * K, bytes = double(ops::q4_weight_bytes(w0));
  st.counters["GMAC/s"] = benchmark::Counter(macs * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["wGB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(std::string(design == kQ8    ? "q8 "
                          : design == kF32 ? "f32 "
                                           : "f32+sgemm ") +
              (amx ? "amx" : kernels::isa_name(isa)));
}

void args(benchmark::internal::Benchmark* b) {
  for (int isa : {1, 2, 0})
    for (int design : {kQ8, kF32}) {
      // decode: 8 gate-sized matrices (190 MB) so every call reads from DRAM
      b->Args({design, isa, 1, 11008, 4096, 8});
      for (int M : {2, 4, 8}) b->Args({design, isa, M, 11008, 4096, 8});
      for (int M : {1, 8}) b->Args({design, isa, M, 1024, 1024, 1});  // in L2: the kernel's own speed
    }
  for (int isa : {1, 2})
    for (int design : {kQ8, kF32, kF32Sgemm}) b->Args({design, isa, 512, 4096, 4096, 1});
  // Issue 16: AVX-512 VNNI against AMX tiles, the 7B square and gate shapes and small row counts
  // (where AMX starts to pay: kernels::kQ4AmxMinRows).
  for (int isa : {2, kAmx}) {
    for (int M : {4, 8, 16, 32, 64, 512}) b->Args({kQ8, isa, M, 4096, 4096, 1});
    b->Args({kQ8, isa, 512, 11008, 4096, 1});
    b->Args({kQ8, isa, 512, 4096, 11008, 1});
  }
  // The 1B shape's decode matrices (q/o, gate/up, down), 1 and 8 rows (continuous batching).
  for (int isa : {1, 2})
    for (int M : {1, 8}) {
      b->Args({kQ8, isa, M, 2048, 2048, 24});
      b->Args({kQ8, isa, M, 5632, 2048, 8});
      b->Args({kQ8, isa, M, 2048, 5632, 8});
    }
}

BENCHMARK(BM_Q4)->Apply(args)->ArgNames({"design", "isa", "M", "N", "K", "mats"})->MeasureProcessCPUTime();

// The whole op (activation quantization + kernel over pieces, ops::linear_multi) on the 1B gate
// and up matrices, as a decode step calls it: args M, threads; 8 layers' pairs cycled (DRAM).
void BM_Q4LinearOp(benchmark::State& st) {
  const int M = int(st.range(0)), T = int(st.range(1)), N = 5632, K = 2048;
  std::vector<std::unique_ptr<Mat>> mats;
  std::vector<ops::Linear> lins(16);
  for (int i = 0; i < 16; ++i) {
    mats.push_back(make_mat(N, K, 128, uint64_t(i) + 11));
    lins[size_t(i)].kind = ops::Linear::Kind::kQ4;
    lins[size_t(i)].n_out = N;
    lins[size_t(i)].n_in = K;
    lins[size_t(i)].q4 = mats.back()->w;
  }
  std::vector<float> x(size_t(M) * K), y0(size_t(M) * N), y1(y0.size());
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  ThreadPool pool(T);
  int i = 0;
  for (auto _ : st) {
    ops::LinearOut outs[2] = {{&lins[size_t(i % 8) * 2], y0.data()}, {&lins[size_t(i % 8) * 2 + 1], y1.data()}};
    ops::linear_multi(outs, 2, x.data(), M, pool);
    ++i;
  }
  st.counters["GMAC/s"] = benchmark::Counter(2.0 * M * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_Q4LinearOp)->ArgNames({"M", "threads"})->Args({8, 1})->Args({8, 2})->Args({1, 2})->UseRealTime()->Unit(benchmark::kMillisecond);

// Issue 16: prefill through the whole op (ops::linear_multi: activation quantization, pieces over
// the pool) on one 7B matrix, N x K = 4096 x 4096 or 11008 x 4096, M rows, 2 threads, with AMX
// (where the CPU has it) or without (as METHARME_ISA=avx512). args: M, N, amx, group size (128:
// GPTQ g128; 32: the GGUF Q4_0 / Q4_K layout, 32-value activation blocks).
void BM_Q4Prefill(benchmark::State& st) {
  const int M = int(st.range(0)), N = int(st.range(1)), K = 4096, gs = int(st.range(3));
  const bool amx = st.range(2) != 0;
  if (amx && !kernels::amx_enabled()) {
    st.SkipWithError("AMX is not in use on this CPU");
    return;
  }
  auto mat = make_mat(N, K, gs, 21);
  ops::Linear lin;
  lin.kind = ops::Linear::Kind::kQ4;
  lin.n_out = N;
  lin.n_in = K;
  lin.q4 = mat->w;
  std::vector<float> x(size_t(M) * K), y(size_t(M) * N);
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  ThreadPool pool(2);
  kernels::set_amx_enabled(amx);
  for (auto _ : st) {
    ops::LinearOut out{&lin, y.data()};
    ops::linear_multi(&out, 1, x.data(), M, pool);
  }
  kernels::set_amx_enabled(true);
  st.counters["GMAC/s"] = benchmark::Counter(double(M) * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.SetLabel(amx ? "amx" : "avx512-vnni");
}
BENCHMARK(BM_Q4Prefill)
    ->ArgNames({"M", "N", "amx", "gs"})
    ->ArgsProduct({{512}, {4096, 11008}, {0, 1}, {128}})
    ->ArgsProduct({{16, 32, 64}, {4096}, {0, 1}, {128}})
    ->ArgsProduct({{32, 512}, {4096}, {0, 1}, {32}})
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond);

// The fp16 lm_head of the 1B shape (32000 x 2048, 131 MB: streamed from DRAM every call) with
// M rows, one thread: M = 1 is decode, M = 8 a continuous-batching step of 8 requests.
void BM_DenseLmHead(benchmark::State& st) {
  const int M = int(st.range(0)), N = 32000, K = 2048;
  std::vector<uint16_t> w(size_t(N) * K);
  std::mt19937 rng(3);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  for (auto& v : w) v = f32_to_fp16(nd(rng));
  std::vector<float> x(size_t(M) * K), y(size_t(M) * N);
  for (auto& v : x) v = nd(rng);
  const auto& k = kernels::dense_kernels();
  for (auto _ : st) {
    k.gemm(kernels::WType::kF16, w.data(), K, x.data(), K, y.data(), N, M, K, 0, N);
    benchmark::DoNotOptimize(y.data());
  }
  st.counters["GMAC/s"] = benchmark::Counter(double(M) * N * K * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["wGB/s"] = benchmark::Counter(double(N) * K * 2e-9, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_DenseLmHead)->ArgName("M")->Arg(1)->Arg(4)->Arg(8)->Unit(benchmark::kMillisecond)->MeasureProcessCPUTime();

}  // namespace
}  // namespace metharme

BENCHMARK_MAIN();
