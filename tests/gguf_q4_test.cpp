// GGUF Q4_0, Q4_1 and Q4_K repacked straight from their blocks into the int4 tiles
// (model/gguf_q4.cpp): on odd shapes with fresh random blocks the repacked weights equal the
// reference dequantization (formats/ggml_quants.cpp) bit for bit (Q4_1: to fp32 rounding of its
// offsets), in the Q/K row order too; and on these and the int8-code types (model/gguf_i8.cpp) a
// block scale, min or offset that is not finite fails naming the file, the tensor and the row.
#include "model/gguf_q4.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <tuple>

#include "formats/ggml_quants.h"
#include "formats/gguf_llama.h"
#include "model/gguf_i8.h"
#include "ops/q4_linear.h"
#include "support/gguf_blocks.h"
#include "util/error.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

using Case = std::tuple<GgmlType, int, int>;  // type, N, K
class GgufQ4 : public ::testing::TestWithParam<Case> {};

TEST_P(GgufQ4, RepackEqualsReferenceDequantization) {
  const auto [t, N, K] = GetParam();
  std::mt19937 rng(uint32_t(N * 31 + K + int(t)));
  const std::vector<uint8_t> b = test::random_gguf_blocks(t, N, K, rng);
  std::vector<float> want(size_t(N) * size_t(K));
  ggml_dequantize(t, b.data(), int64_t(want.size()), want.data());
  ThreadPool pool(2);
  const int hd = 16;
  for (int qk : {0, hd}) {
    if (qk && N % qk) continue;
    const ops::Linear l = gguf_q4_linear(test::gguf_tensor_view(t, b, N, K), N, K, qk, pool, "m.gguf");
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

// Hostile files: an infinite or NaN d, dmin or m in one block of the file's row 5 fails with the
// file, the tensor and the row named, on the int4 layouts and the int8-code ones alike.
TEST(GgufQ4, NonFiniteBlockNumbersAreRefused) {
  ThreadPool pool(2);
  std::mt19937 rng(9);
  struct Bad {
    GgmlType t;
    size_t at;  // byte offset inside the row's second block
    uint16_t bits;
  };
  for (Bad bad : {Bad{GgmlType::kQ4_0, 0, 0x7C00}, Bad{GgmlType::kQ4_1, 0, 0xFC00}, Bad{GgmlType::kQ4_1, 2, 0x7E00},
                  Bad{GgmlType::kQ4_K, 0, 0x7C00}, Bad{GgmlType::kQ4_K, 2, 0x7E00}, Bad{GgmlType::kQ8_0, 0, 0x7C00},
                  Bad{GgmlType::kQ5_0, 0, 0x7E00}, Bad{GgmlType::kQ5_1, 2, 0xFC00}, Bad{GgmlType::kQ3_K, 108, 0x7C00},
                  Bad{GgmlType::kQ5_K, 2, 0x7E00}, Bad{GgmlType::kQ6_K, 208, 0x7C00}}) {
    const int N = 20, K = 512;
    std::vector<uint8_t> b = test::random_gguf_blocks(bad.t, N, K, rng);
    const size_t row = ggml_tensor_bytes(bad.t, {K}), bb = ggml_block_bytes(bad.t);
    std::memcpy(&b[5 * row + bb + bad.at], &bad.bits, 2);
    const std::string type = ggml_type_name(uint32_t(bad.t));
    for (int qk : {0, 4}) {  // with the Q/K row order the message still names the file's row
      try {
        const GgufTensorInfo ti = test::gguf_tensor_view(bad.t, b, N, K);
        (void)(gguf_q4_type(bad.t) ? gguf_q4_linear(ti, N, K, qk, pool, "m.gguf")
                                   : gguf_i8_linear(ti, N, K, qk, pool, "m.gguf"));
        ADD_FAILURE() << type << " at " << bad.at << " was accepted";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("m.gguf: tensor 'blk.0.attn_q.weight' row 5 "), std::string::npos)
            << type << ": " << e.what();
        EXPECT_NE(std::string(e.what()).find("not a finite number"), std::string::npos) << e.what();
      }
    }
  }
}

}  // namespace
}  // namespace metharme
