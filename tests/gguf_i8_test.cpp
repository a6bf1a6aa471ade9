// GGUF Q8_0, Q5_0, Q5_1, Q3_K, Q5_K and Q6_K on the int8-code kernels (kernels/i8w.h): the repacked weights equal
// the reference dequantization (formats/ggml_quants.cpp) bit for bit, and the linears on odd shapes
// with fresh random blocks match a double-precision product at every ISA this CPU has, for one row
// (decode) and many rows (prefill), with int8 activations and in the exact fp32 mode. Also
// `metharme info` on a GGUF file.
#include "model/gguf_i8.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <regex>
#include <tuple>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "kernels/isa.h"
#include "kernels/q4.h"
#include "ops/q4_linear.h"
#include "support/gguf_blocks.h"
#include "support/test_util.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

std::vector<float> reference(GgmlType t, const std::vector<uint8_t>& blocks, int N, int K) {
  std::vector<float> w(size_t(N) * size_t(K));
  ggml_dequantize(t, blocks.data(), int64_t(w.size()), w.data());
  return w;
}

// x as the int8 path sees it: blocks of 32 quantized by the scalar reference quantizer.
std::vector<float> int8_view(const std::vector<float>& x, int M, int K) {
  std::vector<float> out(x.size());
  std::vector<int8_t> q(static_cast<size_t>(K));
  std::vector<float> d(size_t(K / 32));
  std::vector<int32_t> s(size_t(K / 32));
  for (int m = 0; m < M; ++m) {
    kernels::q4_kernels_scalar().quantize_q8(&x[size_t(m) * size_t(K)], K, 32, q.data(), d.data(), s.data());
    for (int k = 0; k < K; ++k) out[size_t(m) * size_t(K) + size_t(k)] = d[size_t(k / 32)] * float(q[size_t(k)]);
  }
  return out;
}

using Case = std::tuple<GgmlType, int, int>;  // type, N, K
class GgufI8 : public ::testing::TestWithParam<Case> {};

TEST_P(GgufI8, RepackEqualsReferenceDequantization) {
  const auto [t, N, K] = GetParam();
  std::mt19937 rng(uint32_t(N * 131 + K));
  const std::vector<uint8_t> b = test::random_gguf_blocks(t, N, K, rng);
  ThreadPool pool(2);
  const ops::Linear l = gguf_i8_linear(test::gguf_tensor_view(t, b, N, K), N, K, 0, pool, "m.gguf");
  ASSERT_EQ(l.kind, ops::Linear::Kind::kI8);
  const std::vector<float> got = ops::i8_dequantize(*l.i8), want = reference(t, b, N, K);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  EXPECT_EQ(l.i8->mat.small, t != GgmlType::kQ8_0);
  // The K-quants keep their own scale layout (kernels/i8w.h): Q6_K / Q3_K 8.56, Q5_K 8.63 bits a
  // weight with the codes; Q8_0 / Q5_0 fp32 scales per 32 (9 bits), Q5_1 and fp32 adds (10); the
  // GPU's fp32 form of it gives the same weights.
  const size_t cols = size_t(l.i8->mat.n_tiles) * 16, kk = size_t(K);
  const bool kquant = t == GgmlType::kQ3_K || t == GgmlType::kQ5_K || t == GgmlType::kQ6_K;
  const bool adds = t == GgmlType::kQ5_K || t == GgmlType::kQ5_1;
  const size_t sb = size_t(l.i8->mat.sb);
  const size_t want_bytes =
      cols * kk +
      (kquant ? cols * (kk / sb) + cols * (kk / 256) * 2 * (adds ? 2 : 1) : cols * (kk / 32) * 4 * (adds ? 2 : 1)) +
      (kquant && adds ? cols * (kk / 32) : 0);
  EXPECT_EQ(ops::i8_weight_bytes(*l.i8), want_bytes);
  EXPECT_EQ(l.i8->mat.ksc != nullptr, kquant);
  EXPECT_EQ(l.i8->mat.sb, t == GgmlType::kQ6_K || t == GgmlType::kQ3_K ? 16 : 32);
  const ops::I8Scales fs = ops::i8_scales(*l.i8);
  EXPECT_EQ(fs.adds.empty(), !adds);
  for (int n = 0; n < N; ++n)
    for (int k = 0; k < K; k += 7) {
      const size_t tile = size_t(n / 16), c = size_t(n % 16);
      float v = fs.scales[(tile * (kk / sb) + size_t(k) / sb) * 16 + c] *
                float(l.i8->mat.qs[size_t(n / 16) * kk * 16 + size_t(k / 4) * 64 + c * 4 + size_t(k % 4)]);
      if (!fs.adds.empty()) v += fs.adds[(tile * (kk / 32) + size_t(k / 32)) * 16 + c];
      ASSERT_EQ(v, want[size_t(n) * kk + size_t(k)]) << "fp32 form, row " << n << " col " << k;
    }
  // attn_q / attn_k: output row n is GGUF row hf_qk_row_to_gguf(n, head_dim).
  const int hd = 16;
  if (N % hd == 0) {
    const ops::Linear p = gguf_i8_linear(test::gguf_tensor_view(t, b, N, K), N, K, hd, pool, "m.gguf");
    const std::vector<float> g = ops::i8_dequantize(*p.i8);
    for (int n = 0; n < N; ++n)
      ASSERT_EQ(std::memcmp(&g[size_t(n) * size_t(K)], &want[size_t(hf_qk_row_to_gguf(n, hd)) * size_t(K)],
                            size_t(K) * sizeof(float)),
                0)
          << "row " << n;
  }
}

TEST_P(GgufI8, LinearMatchesDoubleProductAtEveryIsa) {
  const auto [t, N, K] = GetParam();
  std::mt19937 rng(uint32_t(N * 7 + K * 3 + int(t)));
  const std::vector<uint8_t> b = test::random_gguf_blocks(t, N, K, rng);
  const std::vector<float> W = reference(t, b, N, K);
  ThreadPool pool(2);
  const ops::Linear l = gguf_i8_linear(test::gguf_tensor_view(t, b, N, K), N, K, 0, pool, "m.gguf");
  const kernels::Isa saved = kernels::active_isa();
  for (int M : {1, 3, 13, 37}) {
    std::uniform_real_distribution<float> u(-1.0f, 1.0f);
    std::vector<float> x(size_t(M) * size_t(K));
    for (auto& v : x) v = u(rng);
    x[5] = 7.0f;  // an outlier, as real activations have
    const std::vector<float> xq = int8_view(x, M, K);
    for (kernels::Isa isa : {kernels::Isa::kScalar, kernels::Isa::kAvx2, kernels::Isa::kAvx512}) {
      if (!kernels::isa_supported(isa)) continue;
      kernels::set_active_isa(isa);
      for (ops::Q4Act mode : {ops::Q4Act::kQ8, ops::Q4Act::kF32}) {
        ops::set_q4_act(mode);
        const std::vector<float>& xr = mode == ops::Q4Act::kQ8 ? xq : x;
        std::vector<float> y(size_t(M) * size_t(N), -1.0f);
        ops::linear(l, x.data(), M, y.data(), pool);
        double worst = 0;
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < N; ++n) {
            double want = 0, mag = 0;
            for (int k = 0; k < K; ++k) {
              const double p = double(W[size_t(n) * size_t(K) + size_t(k)]) * xr[size_t(m) * size_t(K) + size_t(k)];
              want += p;
              mag += std::fabs(p);
            }
            const double err = std::fabs(y[size_t(m) * size_t(N) + size_t(n)] - want);
            worst = std::max(worst, err);
            // fp32 accumulation over K terms: a few ulps of the sum of magnitudes.
            ASSERT_LE(err, 1e-5 * mag + 1e-6) << kernels::isa_name(isa) << " " << ops::q4_act_name(mode) << " M=" << M
                                              << " row " << m << " col " << n;
          }
      }
    }
  }
  kernels::set_active_isa(saved);
  ops::set_q4_act(ops::Q4Act::kAuto);
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GgufI8,
                         ::testing::Values(Case{GgmlType::kQ8_0, 37, 96}, Case{GgmlType::kQ8_0, 64, 352},
                                           Case{GgmlType::kQ6_K, 37, 256}, Case{GgmlType::kQ6_K, 48, 512},
                                           Case{GgmlType::kQ5_K, 50, 256}, Case{GgmlType::kQ5_K, 17, 768},
                                           Case{GgmlType::kQ5_0, 37, 96}, Case{GgmlType::kQ5_1, 50, 160},
                                           Case{GgmlType::kQ3_K, 37, 256}, Case{GgmlType::kQ3_K, 48, 768}),
                         [](const auto& info) {
                           return ggml_type_name(uint32_t(std::get<0>(info.param))) + "_" +
                                  std::to_string(std::get<1>(info.param)) + "x" +
                                  std::to_string(std::get<2>(info.param));
                         });

// `metharme info` counts a GGUF file's tensors (it printed "0 tensors": the store indexes none).
TEST(GgufInfo, CountsTensors) {
  test::TempDir tmp;
  const std::string f = tmp / "m.gguf";
  auto s = test::run_cli({"synth", "-o", f, "--tokenizer", test::fixture("models/stories260k/tokenizer.model"),
                          "--shape", "tiny", "--hidden", "256", "--layers", "2", "--gguf", "q8_0"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  auto r = test::run_cli({"info", "-m", f});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // 2 layers x 9 tensors + token_embd, output_norm, output.
  EXPECT_NE(r.out.find("files:        1 (21 tensors)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("q8_0 (int8 codes)"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace metharme
