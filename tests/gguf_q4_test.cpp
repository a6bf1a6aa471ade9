// GGUF Q4_0, Q4_1 and Q4_K repacked straight from their blocks into the int4 tiles
// (model/gguf_q4.cpp): on odd shapes with fresh random blocks the repacked weights equal the
// reference dequantization (formats/ggml_quants.cpp) bit for bit (Q4_1: to fp32 rounding of its
// offsets), in the Q/K row order too, and a block scale or min that is not finite fails naming
// the file, the tensor and the row.
#include "model/gguf_q4.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

// Random blocks of type t for an N x K matrix: random code and scale bytes, sane fp16 factors.
std::vector<uint8_t> random_blocks(GgmlType t, int N, int K, std::mt19937& rng) {
  std::vector<uint8_t> b(size_t(N) * ggml_tensor_bytes(t, {K}));
  for (auto& x : b) x = uint8_t(rng());
  const size_t bb = ggml_block_bytes(t);
  std::uniform_real_distribution<float> u(0.5f, 1.5f), sign(-1.0f, 1.0f);
  auto put = [&](size_t at, float v) {
    const uint16_t h = f32_to_fp16(v);
    std::memcpy(&b[at], &h, 2);
  };
  for (size_t off = 0; off < b.size(); off += bb) {
    put(off, 0.002f * u(rng));                                  // d
    if (t == GgmlType::kQ4_1) put(off + 2, 0.02f * sign(rng));  // m
    if (t == GgmlType::kQ4_K) put(off + 2, 0.001f * u(rng));    // dmin
  }
  return b;
}

GgufTensorInfo info_of(GgmlType t, const std::vector<uint8_t>& b, int N, int K) {
  GgufTensorInfo ti;
  ti.name = "blk.0.attn_q.weight";
  ti.type = t;
  ti.dims = {K, N};
  ti.numel = int64_t(N) * K;
  ti.nbytes = b.size();
  ti.data = b.data();
  return ti;
}

using Case = std::tuple<GgmlType, int, int>;  // type, N, K
class GgufQ4 : public ::testing::TestWithParam<Case> {};

TEST_P(GgufQ4, RepackEqualsReferenceDequantization) {
  const auto [t, N, K] = GetParam();
  std::mt19937 rng(uint32_t(N * 31 + K + int(t)));
  const std::vector<uint8_t> b = random_blocks(t, N, K, rng);
  std::vector<float> want(size_t(N) * size_t(K));
  ggml_dequantize(t, b.data(), int64_t(want.size()), want.data());
  ThreadPool pool(2);
  const int hd = 16;
  for (int qk : {0, hd}) {
    if (qk && N % qk) continue;
    const ops::Linear l = gguf_q4_linear(info_of(t, b, N, K), N, K, qk, pool, "m.gguf");
    ASSERT_EQ(l.kind, ops::Linear::Kind::kQ4);
    EXPECT_EQ(l.q4->mat.uniform_zero, t == GgmlType::kQ4_0 ? 8 : t == GgmlType::kQ4_K ? 0 : -1);
    EXPECT_EQ(l.q4->mat.ksc != nullptr, t == GgmlType::kQ4_K);
    EXPECT_EQ(l.q4->offsets.empty(), t != GgmlType::kQ4_1);
    const std::vector<float> got = ops::q4_dequantize(*l.q4);
    for (int n = 0; n < N; ++n) {
      const int src = qk ? hf_qk_row_to_gguf(n, qk) : n;
      for (int k = 0; k < K; ++k) {
        const float g = got[size_t(n) * size_t(K) + size_t(k)], w = want[size_t(src) * size_t(K) + size_t(k)];
        if (t == GgmlType::kQ4_1)  // d*(q - z) + (m + d*z): one more fp32 rounding than d*q + m
          ASSERT_NEAR(g, w, 2e-7 * (1 + std::fabs(w) * 8)) << "row " << n << " col " << k << " qk " << qk;
        else
          ASSERT_EQ(g, w) << "row " << n << " col " << k << " qk " << qk;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(OddShapes, GgufQ4,
                         ::testing::Values(Case{GgmlType::kQ4_0, 37, 96}, Case{GgmlType::kQ4_0, 64, 352},
                                           Case{GgmlType::kQ4_1, 37, 96}, Case{GgmlType::kQ4_1, 48, 160},
                                           Case{GgmlType::kQ4_K, 37, 256}, Case{GgmlType::kQ4_K, 48, 512},
                                           Case{GgmlType::kQ4_K, 17, 768}),
                         [](const auto& i) {
                           return std::string(ggml_type_name(uint32_t(std::get<0>(i.param)))) + "_" +
                                  std::to_string(std::get<1>(i.param)) + "x" + std::to_string(std::get<2>(i.param));
                         });

// Hostile files: an infinite d (Q4_0, Q4_1, Q4_K), a NaN m (Q4_1) or dmin (Q4_K) in one block of
// row 5 fails with the file, the tensor and the row named.
TEST(GgufQ4, NonFiniteBlockNumbersAreRefused) {
  ThreadPool pool(2);
  std::mt19937 rng(9);
  struct Bad {
    GgmlType t;
    size_t at;  // byte offset inside the row's second block
    uint16_t bits;
  };
  for (Bad bad : {Bad{GgmlType::kQ4_0, 0, 0x7C00}, Bad{GgmlType::kQ4_1, 0, 0xFC00}, Bad{GgmlType::kQ4_1, 2, 0x7E00},
                  Bad{GgmlType::kQ4_K, 0, 0x7C00}, Bad{GgmlType::kQ4_K, 2, 0x7E00}}) {
    const int N = 20, K = 512;
    std::vector<uint8_t> b = random_blocks(bad.t, N, K, rng);
    const size_t row = ggml_tensor_bytes(bad.t, {K}), bb = ggml_block_bytes(bad.t);
    std::memcpy(&b[5 * row + bb + bad.at], &bad.bits, 2);
    try {
      (void)gguf_q4_linear(info_of(bad.t, b, N, K), N, K, 0, pool, "m.gguf");
      ADD_FAILURE() << ggml_type_name(uint32_t(bad.t)) << " at " << bad.at << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("m.gguf: tensor 'blk.0.attn_q.weight' row 5 "), std::string::npos)
          << e.what();
      EXPECT_NE(std::string(e.what()).find("not a finite number"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace metharme
