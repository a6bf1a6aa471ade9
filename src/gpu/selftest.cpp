#include "gpu/selftest.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "gpu/ops.h"
#include "kernels/dense.h"
#include "ops/elementwise.h"
#include "ops/i8_linear.h"
#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme::gpu {

namespace {

// y = x W^T on the device for M rows; W given as a Linear.
std::vector<float> run_matmul(Context& ctx, const ops::Linear& l, const std::vector<float>& x, int M) {
  DeviceLinear d = upload_linear(ctx, l, "self-test weight");
  Buffer xb = ctx.alloc(x.size() * 4, "self-test x"), yb = ctx.alloc(size_t(M) * l.n_out * 4, "self-test y");
  ctx.upload(xb, x.data(), x.size() * 4);
  ctx.begin();
  matmul(ctx, d, xb, yb, M);
  ctx.submit();
  std::vector<float> y(size_t(M) * l.n_out);
  ctx.download(yb, y.data(), y.size() * 4);
  free_linear(ctx, d);
  ctx.free(xb);
  ctx.free(yb);
  return y;
}

// Largest |got - want| relative to the scale of the row's terms.
double worst(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag) {
  double w = 0;
  for (size_t i = 0; i < got.size(); ++i) w = std::max(w, std::fabs(got[i] - want[i]) / (mag[i] + 1e-30));
  return w;
}

}  // namespace

std::string device_self_test(Context& ctx) {
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int N = 40, K = 96, G = 3, M = 12;  // 3 groups of 32, act-order: shuffled g_idx
  std::vector<uint32_t> qweight(size_t(K / 8) * N), qzeros(size_t(G) * (N / 8));
  std::vector<uint16_t> scales(size_t(G) * N);
  std::vector<int32_t> g_idx(K);
  for (auto& w : qweight) w = uint32_t(rng());
  for (auto& w : qzeros) w = uint32_t(rng()) & 0xEEEEEEEEu;
  for (auto& s : scales) s = f32_to_fp16(0.001f + 0.01f * std::fabs(nd(rng)));
  for (int k = 0; k < K; ++k) g_idx[size_t(k)] = k % G;
  std::shuffle(g_idx.begin(), g_idx.end(), rng);
  ops::GptqSource src;
  src.n = N;
  src.k = K;
  src.n_groups = G;
  src.group_size = K / G;
  src.qweight = qweight.data();
  src.qzeros = qzeros.data();
  src.scales = scales.data();
  src.g_idx = g_idx.data();
  src.name = "device self-test";
  const ops::Linear q4 = ops::make_q4_linear(ops::q4_repack(src, 1));
  const std::vector<float> wq = ops::q4_dequantize(*q4.q4);
  std::vector<float> wf(size_t(N) * K), x(size_t(M) * K);
  for (auto& v : wf) v = nd(rng);
  for (auto& v : x) v = nd(rng);
  std::vector<uint16_t> w16(wf.size());
  for (size_t i = 0; i < wf.size(); ++i) w16[i] = f32_to_fp16(wf[i]);
  const ops::Linear f16 = ops::make_dense_linear(kernels::WType::kF16, w16.data(), N, K);

  const bool simulate = [] {
    const char* e = std::getenv("METHARME_SELFTEST_SIMULATE_MISMATCH");
    return e && std::strstr(e, "vulkan");
  }();
  struct Case {
    const char* name;
    const ops::Linear* l;
    std::vector<float> w;  // the CPU's view of the weights, [N][K]
    int rows;              // 3: the decode shaders; 12: int4 prefill (q4_prefill_sg where used)
  };
  std::vector<float> w16f(w16.size());
  for (size_t i = 0; i < w16.size(); ++i) w16f[i] = fp16_to_f32(w16[i]);
  // Int8 codes with 16-row scales and per-32-row adds (GGUF Q5_K/Q6_K/Q8_0's layout).
  auto i8w = ops::i8_alloc(N, K, 16, true, "device self-test");
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; ++k) {
      ops::i8_set_code(*i8w, n, k, int8_t(int(rng() % 256) - 128));
      if (k % 16 == 0) ops::i8_scale(*i8w, n, k) = 0.001f + 0.01f * std::fabs(nd(rng));
      if (k % 32 == 0) ops::i8_add(*i8w, n, k) = 0.01f * nd(rng);
    }
  ops::i8_finish(*i8w);
  const ops::Linear i8 = ops::make_i8_linear(i8w);
  for (const Case& c :
       {Case{"int4 matmul", &q4, wq, 3}, Case{"int4 prefill matmul", &q4, wq, M}, Case{"f16 matmul", &f16, w16f, 3},
        Case{"int8-code matmul", &i8, ops::i8_dequantize(*i8w), 3}}) {
    std::vector<float> got = run_matmul(ctx, *c.l, x, c.rows);
    if (simulate) got[got.size() / 2] += 1.0f;
    std::vector<double> want(got.size()), mag(got.size());
    for (int m = 0; m < c.rows; ++m)
      for (int n = 0; n < N; ++n)
        for (int k = 0; k < K; ++k) {
          const double t = double(c.w[size_t(n) * K + k]) * x[size_t(m) * K + k];
          want[size_t(m) * N + n] += t;
          mag[size_t(m) * N + n] += std::fabs(t);
        }
    // fp32 sums of K terms in any order stay within K * 2^-24 of the absolute sum.
    const double err = worst(got, want, mag);
    if (err > 4.0 * K / (1 << 24)) return cat(c.name, " differs from the CPU by ", err, " (relative)");
  }
  return "";
}

}  // namespace metharme::gpu
