// Attention over a long KV cache at the LLaMA-7B shape (32 heads x 128, no GQA), issue 16:
//   BM_PrefillFlash: a 512-token prefill's attention after `depth` cached positions, as
//     LlamaRuntime::attention runs it (flash tiles, kernels/kv.h), per KV type;
//   BM_PrefillSgemm: the tiling it replaced (decode the whole visible prefix to f32 per tile,
//     two sgemms, scalar softmax), for a before/after in one binary;
//   BM_Decode: one decode step's attention at `depth` over enough layers that the cache is larger
//     than the caches, by the one-sweep kernel (attend_group) or the two-pass path it replaced;
//     counters ms/layer (time per token per layer) and KV_GB/s (KV bytes read per second), to
//     set against the read-bandwidth probe printed first for 1 and 2 threads.
// Run: build/bench/kv_attention_bench --benchmark_filter=Decode  (or Prefill); e.g.
//   --benchmark_filter='Decode/depth:2048/type:2/threads:2' for q8 at depth 2048, 2 threads.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "formats/hf_config.h"
#include "kernels/bandwidth.h"
#include "model/kv_cache.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "util/buffer.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

using kernels::KvType;
constexpr int kHeads = 32, kHd = 128, kQd = kHeads * kHd, kNew = 512;

LlamaConfig config(int layers) {
  LlamaConfig c;
  c.hidden_size = kQd;
  c.num_attention_heads = c.num_key_value_heads = kHeads;
  c.head_dim = kHd;
  c.num_hidden_layers = layers;
  return c;
}

// `layers` layers of n_ctx random keys and values in the given type.
KvCache make_cache(int layers, int n_ctx, KvType t) {
  KvCache kv(config(layers), n_ctx, 1, t, t);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> k(kQd), v(kQd);
  for (int l = 0; l < layers; ++l)
    for (int p = 0; p < n_ctx; ++p) {
      for (int i = 0; i < kQd; ++i) k[size_t(i)] = nd(rng), v[size_t(i)] = nd(rng);
      kv.store(l, 0, p, k.data(), v.data());
    }
  return kv;
}

std::vector<float> randn(size_t n) {
  std::mt19937 rng(2);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> x(n);
  for (auto& v : x) v = nd(rng);
  return x;
}

KvType type_arg(int64_t i) { return KvType(i); }

void BM_PrefillFlash(benchmark::State& state) {
  const int depth = int(state.range(0));
  const KvType t = type_arg(state.range(1));
  KvCache kv = make_cache(1, depth + kNew, t);
  auto q = randn(size_t(kNew) * kQd);
  std::vector<float> out(q.size());
  ThreadPool pool(default_thread_count());
  const int tile = ops::prefill_tile_rows(1), tiles = kNew / tile;
  const size_t wf = (ops::prefill_work_floats(tile, kHd) + 15) / 16 * 16;
  PageBuffer work(size_t(pool.size()) * wf * sizeof(float));
  for (auto _ : state) {
    pool.run(kHeads * tiles, [&](int task, int thread) {
      const int g = task / tiles, r0 = (task % tiles) * tile;
      const size_t off = size_t(r0) * kQd + size_t(g) * kHd;
      ops::attend_prefill_tile(q.data() + off, kQd, g, 1, kHd, kv.slice(0, 0), depth + r0, tile, out.data() + off, kQd,
                               work.as<float>() + size_t(thread) * wf);
    });
    benchmark::DoNotOptimize(out.data());
  }
  const double keys = double(kNew) * depth + double(kNew) * (kNew + 1) / 2;
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * keys * kQd, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(kernels::kv_type_name(t));
}

// The replaced tile: decode [0, pos_first + rows) to f32, S = Q K^T, softmax, O = P V.
void sgemm_tile(const float* q, int h, const ops::KvSlice& kv, int pos_first, int rows, float* out, float* scores,
                float* kvs) {
  const int n_keys = pos_first + rows;
  const uint8_t* kb = kv.k + size_t(h) * kv.k_head_bytes;
  const uint8_t* vb = kv.v + size_t(h) * kv.v_head_bytes;
  const float* K = reinterpret_cast<const float*>(kb);
  const float* V = reinterpret_cast<const float*>(vb);
  if (kv.k_type != KvType::kF32) {
    kernels::kv_kernels().to_f32(kv.k_type, kb, kHd, n_keys, kvs);
    kernels::kv_kernels().to_f32(kv.v_type, vb, kHd, n_keys, kvs + size_t(n_keys) * kHd);
    K = kvs;
    V = kvs + size_t(n_keys) * kHd;
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_keys, kHd, 1.0f, q, kQd, K, kHd, 0.0f, scores, n_keys);
  for (int i = 0; i < rows; ++i) {
    float* s = scores + int64_t(i) * n_keys;
    const int n = pos_first + i + 1;
    ops::softmax(s, n, float(1.0 / std::sqrt(double(kHd))));
    std::memset(s + n, 0, size_t(n_keys - n) * sizeof(float));
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, kHd, n_keys, 1.0f, scores, n_keys, V, kHd, 0.0f, out,
              kQd);
}

void BM_PrefillSgemm(benchmark::State& state) {
  const int depth = int(state.range(0));
  const KvType t = type_arg(state.range(1));
  const int n_ctx = depth + kNew, tile = 64, tiles = kNew / tile;
  KvCache kv = make_cache(1, n_ctx, t);
  auto q = randn(size_t(kNew) * kQd);
  std::vector<float> out(q.size());
  ThreadPool pool(default_thread_count());
  std::vector<float> scores(size_t(pool.size()) * tile * size_t(n_ctx)), kvs(size_t(pool.size()) * 2 * n_ctx * kHd);
  for (auto _ : state) {
    pool.run(kHeads * tiles, [&](int task, int thread) {
      const int h = task / tiles, r0 = (task % tiles) * tile;
      const size_t off = size_t(r0) * kQd + size_t(h) * kHd;
      sgemm_tile(q.data() + off, h, kv.slice(0, 0), depth + r0, tile, out.data() + off,
                 scores.data() + size_t(thread) * tile * n_ctx, kvs.data() + size_t(thread) * 2 * n_ctx * kHd);
    });
    benchmark::DoNotOptimize(out.data());
  }
  const double keys = double(kNew) * depth + double(kNew) * (kNew + 1) / 2;
  state.counters["GFLOP/s"] = benchmark::Counter(4.0 * keys * kQd, benchmark::Counter::kIsIterationInvariantRate);
  state.SetLabel(kernels::kv_type_name(t));
}

// The decode path before issue 16's one-sweep kernel (ops::attend_group until then, the same
// table kernels): every score, a scalar-exp softmax, then the weighted sum, two sweeps of the cache.
void two_pass_group(const float* q, int g, const ops::KvSlice& kv, int n_pos, float* out, float* scores) {
  const auto& k = kernels::kv_kernels();
  k.scores(kv.k_type, kv.k + size_t(g) * kv.k_head_bytes, kHd, n_pos, q, kHd, 1, scores, n_pos);
  ops::softmax(scores, n_pos, float(1.0 / std::sqrt(double(kHd))));
  std::memset(out, 0, kHd * sizeof(float));
  k.weighted_sum(kv.v_type, kv.v + size_t(g) * kv.v_head_bytes, kHd, n_pos, scores, n_pos, 1, out, kHd);
}

// Enough layers that one step reads >= 512 MB of cache (past every cache level), at most 64. All
// layers hold the same random rows (different addresses): layer 0 is stored, the others are byte
// copies of it (one sequence: a layer's kv heads are contiguous), so building them is quick.
int decode_layers(int depth, KvType t) {
  const double per_layer = 2.0 * kHeads * double(depth) * double(kernels::kv_row_bytes(t, kHd));
  return std::min(64, std::max(1, int(std::ceil(512e6 / per_layer))));
}

KvCache make_deep_cache(int layers, int depth, KvType t) {
  KvCache kv(config(layers), depth, 1, t, t);
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> k(size_t(depth) * kQd), v(k.size());
  for (size_t i = 0; i < k.size(); ++i) k[i] = nd(rng), v[i] = nd(rng);
  for (int p = 0; p < depth; ++p) kv.store(0, 0, p, k.data() + size_t(p) * kQd, v.data() + size_t(p) * kQd);
  const ops::KvSlice s0 = kv.slice(0, 0);
  for (int l = 1; l < layers; ++l) {
    const ops::KvSlice s = kv.slice(l, 0);
    std::memcpy(const_cast<uint8_t*>(s.k), s0.k, kHeads * s0.k_head_bytes);
    std::memcpy(const_cast<uint8_t*>(s.v), s0.v, kHeads * s0.v_head_bytes);
  }
  return kv;
}

// One decode step's attention (32 heads) over every layer of a cache `depth` deep; path 0 the
// two-pass path above, 1 the one-sweep kernel (attend_group). ms/layer: time per token per layer.
void BM_Decode(benchmark::State& state) {
  const int depth = int(state.range(0)), threads = int(state.range(2)), path = int(state.range(3));
  const KvType t = type_arg(state.range(1));
  const int layers = decode_layers(depth, t);
  KvCache kv = make_deep_cache(layers, depth, t);
  auto q = randn(kQd);
  std::vector<float> out(q.size());
  ThreadPool pool(threads);
  const size_t wf = std::max(size_t(depth), ops::decode_work_floats(1, kHd));
  std::vector<double> work(size_t(pool.size()) * wf);  // doubles: aligned for the scalar twin
  for (auto _ : state) {
    for (int l = 0; l < layers; ++l)
      pool.run(kHeads, [&](int g, int thread) {
        float* w = reinterpret_cast<float*>(work.data() + size_t(thread) * wf);
        float* o = out.data() + size_t(g) * kHd;
        if (path == 0)
          two_pass_group(q.data() + size_t(g) * kHd, g, kv.slice(l, 0), depth, o, w);
        else
          ops::attend_group(q.data() + size_t(g) * kHd, g, 1, kHd, kv.slice(l, 0), depth, o, w);
      });
    benchmark::DoNotOptimize(out.data());
  }
  const double bytes = double(kv.bytes_per_position()) * depth;
  state.counters["KV_GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ms/layer"] =
      benchmark::Counter(1e-3 * layers, benchmark::Counter::kIsIterationInvariantRate | benchmark::Counter::kInvert);
  state.SetLabel(std::string(kernels::kv_type_name(t)) + (path ? " one-sweep" : " two-pass") + " layers " +
                 std::to_string(layers));
}

// Types as KvType values: 0 f32, 1 f16, 2 q8, 3 q4.
BENCHMARK(BM_PrefillFlash)
    ->ArgNames({"depth", "type"})
    ->ArgsProduct({{0, 2048}, {0, 1, 2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
BENCHMARK(BM_PrefillSgemm)
    ->ArgNames({"depth", "type"})
    ->ArgsProduct({{0, 2048}, {0, 2, 3}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();
// The 7B shape at depths 512 / 2048 / 4096, q8 / q4 / f16 caches, 1 and 2 threads, both paths.
BENCHMARK(BM_Decode)
    ->ArgNames({"depth", "type", "threads", "path"})
    ->ArgsProduct({{512, 2048, 4096}, {2, 3, 1}, {1, 2}, {0, 1}})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

}  // namespace
}  // namespace metharme

int main(int argc, char** argv) {
  openblas_set_num_threads(1);  // our pool splits the work, as in the runtime
  for (int threads : {1, 2}) {
    const auto bw = metharme::kernels::measure_read_bandwidth(threads, size_t(512) << 20, 3);
    std::printf("read-bandwidth probe (%d threads, 512 MiB): median %.1f GB/s, best %.1f GB/s\n", threads,
                bw.median_gbps, bw.best_gbps);
  }
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
