// Optimized dense kernels against their scalar reference twins, on odd shapes and fresh data.
#include <gtest/gtest.h>

#include <random>

#include "kernels/dense.h"
#include "util/half.h"

namespace metharme::kernels {
namespace {

struct Data {
  std::vector<float> wf;      // the weights as float (after rounding to the type)
  std::vector<uint8_t> raw;   // the weights as stored
};

Data make_weights(WType t, size_t n, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.f, 1.f);
  Data d;
  d.wf.resize(n);
  d.raw.resize(n * wtype_size(t));
  for (size_t i = 0; i < n; ++i) {
    float v = nd(rng);
    if (t == WType::kF32) {
      std::memcpy(&d.raw[i * 4], &v, 4);
    } else {
      uint16_t h = t == WType::kF16 ? f32_to_fp16(v) : f32_to_bf16(v);
      std::memcpy(&d.raw[i * 2], &h, 2);
      v = t == WType::kF16 ? fp16_to_f32(h) : bf16_to_f32(h);
    }
    d.wf[i] = v;
  }
  return d;
}

class DenseKernelTest : public ::testing::TestWithParam<std::tuple<Isa, WType>> {
 protected:
  void SetUp() override {
    if (!isa_supported(std::get<0>(GetParam()))) GTEST_SKIP() << "CPU lacks " << isa_name(std::get<0>(GetParam()));
  }
};

TEST_P(DenseKernelTest, GemmMatchesReference) {
  auto [isa, wt] = GetParam();
  const auto& ref = dense_kernels_scalar();
  const auto& opt = dense_kernels(isa);
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.f, 1.f);
  for (int M : {1, 2, 3, 4, 5, 8, 9, 11, 16}) {
    for (int K : {1, 7, 8, 31, 33, 100, 257}) {
      const int N = 13, ldw = K + 3, ldx = K + 1, ldy = N + 2;
      Data w = make_weights(wt, size_t(N) * ldw, rng);
      std::vector<float> x(size_t(M) * ldx);
      for (auto& v : x) v = nd(rng);
      std::vector<float> y0(size_t(M) * ldy, -7.f), y1 = y0;
      ref.gemm(wt, w.raw.data(), ldw, x.data(), ldx, y0.data(), ldy, M, K, 2, N);
      opt.gemm(wt, w.raw.data(), ldw, x.data(), ldx, y1.data(), ldy, M, K, 2, N);
      for (int m = 0; m < M; ++m) {
        for (int n = 0; n < ldy; ++n) {
          float a = y0[size_t(m) * ldy + n], b = y1[size_t(m) * ldy + n];
          if (n < 2 || n >= N) {
            ASSERT_EQ(b, -7.f) << "wrote outside [n0, n1)";
          } else {
            ASSERT_NEAR(a, b, 1e-4f * (1.f + std::sqrt(float(K)))) << "M=" << M << " K=" << K << " n=" << n;
          }
        }
      }
    }
  }
}

TEST_P(DenseKernelTest, GemvTransposedMatchesReference) {
  auto [isa, wt] = GetParam();
  std::mt19937 rng(std::random_device{}());
  std::uniform_real_distribution<float> ud(0.f, 1.f);
  for (int n : {1, 2, 17, 64}) {
    for (int K : {1, 8, 31, 32, 40, 128, 130}) {
      const int ldv = K + 5;
      Data v = make_weights(wt, size_t(n) * ldv, rng);
      std::vector<float> p(static_cast<size_t>(n));
      for (auto& e : p) e = ud(rng);
      std::vector<float> y0(static_cast<size_t>(K)), y1;
      for (auto& e : y0) e = ud(rng);
      y1 = y0;
      dense_kernels_scalar().gemv_t(wt, v.raw.data(), ldv, p.data(), n, K, y0.data());
      dense_kernels(isa).gemv_t(wt, v.raw.data(), ldv, p.data(), n, K, y1.data());
      for (int k = 0; k < K; ++k) ASSERT_NEAR(y0[size_t(k)], y1[size_t(k)], 1e-4f * (1.f + float(n))) << "n=" << n << " K=" << K;
    }
  }
}

TEST_P(DenseKernelTest, ConversionsMatchReferenceBitForBit) {
  auto [isa, wt] = GetParam();
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.f, 100.f);
  for (int n : {1, 7, 8, 9, 1000}) {
    std::vector<float> src(static_cast<size_t>(n));
    for (auto& e : src) e = nd(rng);
    src[0] = 65519.f;  // rounds to the largest fp16, 65504
    std::vector<uint8_t> a(size_t(n) * wtype_size(wt)), b(a.size());
    dense_kernels_scalar().from_f32(wt, src.data(), a.data(), n);
    dense_kernels(isa).from_f32(wt, src.data(), b.data(), n);
    ASSERT_EQ(a, b) << "n=" << n;
    std::vector<float> fa(static_cast<size_t>(n)), fb(static_cast<size_t>(n));
    dense_kernels_scalar().to_f32(wt, a.data(), fa.data(), n);
    dense_kernels(isa).to_f32(wt, a.data(), fb.data(), n);
    ASSERT_EQ(fa, fb);
  }
}

TEST_P(DenseKernelTest, SiluMulMatchesReference) {
  auto [isa, wt] = GetParam();
  if (wt != WType::kF32) GTEST_SKIP() << "silu_mul has no weight type";
  std::mt19937 rng(std::random_device{}());
  std::normal_distribution<float> nd(0.f, 4.f);
  for (int n : {1, 7, 8, 13, 1000}) {
    std::vector<float> a(static_cast<size_t>(n)), b(a.size());
    for (size_t i = 0; i < a.size(); ++i) {
      a[i] = nd(rng);
      b[i] = nd(rng);
    }
    // The exp range ends: exp(-g) overflows for g < -88.7 and vanishes for g > 103.
    const float edges[] = {-120.f, -88.9f, -87.5f, -20.f, 0.f, 30.f, 90.f, 110.f};
    for (size_t i = 0; i < std::size(edges) && i < a.size(); ++i) a[i] = edges[i];
    std::vector<float> ra = a, oa = a;
    dense_kernels_scalar().silu_mul(ra.data(), b.data(), n);
    dense_kernels(isa).silu_mul(oa.data(), b.data(), n);
    for (int i = 0; i < n; ++i)
      ASSERT_NEAR(ra[size_t(i)], oa[size_t(i)], 1e-6f * std::fabs(ra[size_t(i)]) + 1e-30f)
          << "n=" << n << " a=" << a[size_t(i)] << " b=" << b[size_t(i)];
  }
}

INSTANTIATE_TEST_SUITE_P(All, DenseKernelTest,
                         ::testing::Combine(::testing::Values(Isa::kAvx2, Isa::kAvx512),
                                            ::testing::Values(WType::kF32, WType::kF16, WType::kBF16)),
                         ([](const auto& info) {
                           const char* w[] = {"f32", "f16", "bf16"};
                           std::string isa = isa_name(std::get<0>(info.param));
                           for (auto& c : isa)
                             if (c == '-') c = '_';
                           return isa + "_" + w[int(std::get<1>(info.param))];
                         }));

TEST(Half, Fp16RoundTripAndRounding) {
  // Every fp16 value survives f16 -> f32 -> f16.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7C00) == 0x7C00 && (h & 0x3FF)) continue;  // NaN payloads
    ASSERT_EQ(f32_to_fp16(fp16_to_f32(uint16_t(h))), h) << std::hex << h;
  }
  EXPECT_EQ(fp16_to_f32(0x3C00), 1.0f);
  EXPECT_EQ(fp16_to_f32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(f32_to_fp16(1.0f + std::ldexp(1.0f, -11)), 0x3C00);  // tie rounds to even
  EXPECT_EQ(f32_to_fp16(1e6f), 0x7C00);                             // overflow to inf
  EXPECT_EQ(bf16_to_f32(f32_to_bf16(3.140625f)), 3.140625f);
}

}  // namespace
}  // namespace metharme::kernels
