// GGUF Q4_K's own scale layout in the int4 kernels (kernels/q4.h): 6-bit scales and mins per 32
// rows, fp16 factors per 256. Every ISA against the scalar twin on odd shapes with fresh random
// data, the scalar twin and the linear op against the Q4_K formula in fp64, and the GPTQ-shaped
// form the GPU uploads (ops::q4_groups) against the same formula.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/q4.h"
#include "ops/linear.h"
#include "ops/q4_linear.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

using kernels::kQ4TileCols;

// A random Q4_K matrix [N][K] in the kernels' layout, and W by the formula in fp64.
struct RandomQ4K {
  int n, k;
  std::vector<uint32_t> qweight, qzeros;
  std::vector<float> scales;
  std::shared_ptr<ops::Q4Weight> w;
  std::vector<double> dense;  // [N][K]: kd * sc * code - kdmin * mn

  RandomQ4K(int N, int K, std::mt19937& rng) : n(N), k(K) {
    const int G = K / 32, S = K / 256, T = (N + kQ4TileCols - 1) / kQ4TileCols;
    std::uniform_int_distribution<uint32_t> word;
    qweight.resize(size_t(K / 8) * size_t(N));
    for (auto& v : qweight) v = word(rng);
    qzeros.assign(size_t(G) * size_t((N + 7) / 8), 0);
    scales.assign(size_t(G) * size_t(N), 1.0f);
    ops::GptqSource s;
    s.name = "random q4_k";
    s.n = N, s.k = K, s.n_groups = G, s.group_size = 32;
    s.qweight = qweight.data(), s.qzeros = qzeros.data(), s.zero_offset = 0;
    s.scales = scales.data(), s.scales_type = kernels::WType::kF32;
    w = ops::q4_repack(s, 1);
    const size_t cells = size_t(T) * size_t(G) * kQ4TileCols;
    std::vector<uint8_t> sc(cells, 0), mn(cells, 0);
    std::vector<uint16_t> d(cells / 8, 0), dm(cells / 8, 0);
    std::uniform_real_distribution<float> u(0.0f, 1.0f);
    dense.assign(size_t(N) * size_t(K), 0.0);
    for (int c = 0; c < N; ++c) {
      const size_t t = size_t(c) / kQ4TileCols, col = size_t(c) % kQ4TileCols;
      for (int b = 0; b < S; ++b) {
        const size_t si = (t * size_t(S) + size_t(b)) * kQ4TileCols + col;
        d[si] = f32_to_fp16(1e-4f + 2e-3f * u(rng));
        dm[si] = f32_to_fp16(1e-4f + 2e-3f * u(rng));
      }
      for (int g = 0; g < G; ++g) {
        const size_t gi = (t * size_t(G) + size_t(g)) * kQ4TileCols + col;
        sc[gi] = uint8_t(word(rng) % 64);
        mn[gi] = uint8_t(word(rng) % 64);
        const size_t si = (t * size_t(S) + size_t(g / 8)) * kQ4TileCols + col;
        const double scale = double(fp16_to_f32(d[si])) * sc[gi], min = double(fp16_to_f32(dm[si])) * mn[gi];
        for (int j = 32 * g; j < 32 * g + 32; ++j) {
          const uint32_t code = qweight[size_t(j / 8) * size_t(N) + size_t(c)] >> (4 * (j % 8)) & 15u;
          dense[size_t(c) * size_t(K) + size_t(j)] = scale * code - min;
        }
      }
    }
    ops::q4_set_k_scales(*w, std::move(sc), std::move(mn), std::move(d), std::move(dm));
  }
};

std::vector<float> random_rows(int M, int K, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(M) * size_t(K));
  for (auto& v : x) v = nd(rng);
  if (M > 0) x[size_t(K / 3)] = 12.0f;  // an outlier, as real activations have
  return x;
}

constexpr int kShapes[][2] = {{37, 256}, {50, 512}, {17, 768}, {64, 256}};

TEST(Q4KLayout, DequantizationAndGroupsEqualTheFormula) {
  std::mt19937 rng(7);
  for (auto [N, K] : kShapes) {
    RandomQ4K q(N, K, rng);
    EXPECT_TRUE(q.w->scales.empty() && q.w->scales_f32.empty() && q.w->zeros.empty() && q.w->offsets.empty());
    EXPECT_EQ(q.w->mat.uniform_zero, 0);
    EXPECT_NE(ops::q4_describe(*q.w).find("q4_k"), std::string::npos);
    // 4.625 bits a weight: codes, two 6-bit numbers per 32, two fp16 per 256 (per padded column).
    const size_t cols = size_t(q.w->mat.n_tiles) * kQ4TileCols;
    EXPECT_EQ(ops::q4_weight_bytes(*q.w),
              cols * size_t(K) / 2 + cols * size_t(K / 32) * 2 + cols * size_t(K / 256) * 4);
    const std::vector<float> W = ops::q4_dequantize(*q.w);
    const ops::Q4Groups grp = ops::q4_groups(*q.w);
    ASSERT_EQ(grp.offsets.size(), size_t(N) * size_t(K / 32));
    for (int c = 0; c < N; ++c)
      for (int j = 0; j < K; ++j) {
        const double want = q.dense[size_t(c) * size_t(K) + size_t(j)];
        ASSERT_NEAR(W[size_t(c) * size_t(K) + size_t(j)], want, 1e-6 * (1 + std::fabs(want))) << c << "," << j;
        const size_t gi =
            ((size_t(c) / kQ4TileCols) * size_t(K / 32) + size_t(j / 32)) * kQ4TileCols + size_t(c) % kQ4TileCols;
        const uint32_t code = q.qweight[size_t(j / 8) * size_t(N) + size_t(c)] >> (4 * (j % 8)) & 15u;
        const double g = double(grp.scales[gi]) * (double(code) - grp.zeros[gi]) +
                         grp.offsets[size_t(c) * size_t(K / 32) + size_t(j / 32)];
        ASSERT_NEAR(g, want, 1e-6 * (1 + std::fabs(want))) << "groups " << c << "," << j;
      }
  }
}

// Activations prepared as ops/q4_linear.cpp does (identity row order, kp = K).
struct Acts {
  std::vector<int8_t> q;
  std::vector<float> d, gsum;
  std::vector<int32_t> s;
  Acts(const std::vector<float>& x, int M, int K, const kernels::Q4Kernels& k) {
    q.resize(x.size());
    d.resize(size_t(M) * size_t(K / 32));
    s.resize(d.size());
    gsum.assign(d.size(), 0.0f);
    for (int m = 0; m < M; ++m) {
      const size_t r = size_t(m) * size_t(K), b = size_t(m) * size_t(K / 32);
      k.quantize_q8(&x[r], K, 32, &q[r], &d[b], &s[b]);
      for (int j = 0; j < K; ++j) gsum[b + size_t(j / 32)] += x[r + size_t(j)];
    }
  }
};

void check_isa(kernels::Isa isa) {
  if (!kernels::isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << kernels::isa_name(isa);
  const auto& ref = kernels::q4_kernels_scalar();
  const auto& opt = kernels::q4_kernels(isa);
  std::mt19937 rng(11 + int(isa));
  for (auto [N, K] : kShapes) {
    RandomQ4K q(N, K, rng);
    const kernels::Q4Matrix& m = q.w->mat;
    const size_t n = size_t(m.n_tiles) * kQ4TileCols * size_t(K);
    std::vector<float> dr(n), dopt(n);
    ref.dequant(m, 0, m.n_tiles, dr.data());
    opt.dequant(m, 0, m.n_tiles, dopt.data());
    for (size_t i = 0; i < n; ++i) ASSERT_NEAR(dopt[i], dr[i], 1e-6f * (1 + std::fabs(dr[i]))) << i;
    for (int M : {1, 2, 3, 4, 5, 7, 8, 9, 17, 33}) {
      SCOPED_TRACE(::testing::Message() << N << "x" << K << " M=" << M);
      const std::vector<float> x = random_rows(M, K, rng);
      const Acts a(x, M, K, ref);
      const kernels::Q8Act q8{a.q.data(), a.d.data(), a.s.data(), K, 32};
      const kernels::F32Act f32{x.data(), a.gsum.data(), K, K / 32};
      for (int t0 : {0, 1}) {
        const float sentinel = -12345.0f;
        std::vector<float> yr(size_t(M) * size_t(N), sentinel), yo(yr), fr(yr), fo(yr);
        ref.gemm_q8(m, q8, M, t0, m.n_tiles, yr.data(), N);
        opt.gemm_q8(m, q8, M, t0, m.n_tiles, yo.data(), N);
        ref.gemm_f32(m, f32, M, t0, m.n_tiles, fr.data(), N);
        opt.gemm_f32(m, f32, M, t0, m.n_tiles, fo.data(), N);
        for (int r = 0; r < M; ++r)
          for (int c = 0; c < N; ++c) {
            const size_t i = size_t(r) * size_t(N) + size_t(c);
            if (c < t0 * kQ4TileCols) {
              ASSERT_EQ(yo[i], sentinel);
              ASSERT_EQ(fo[i], sentinel);
              continue;
            }
            ASSERT_NEAR(yo[i], yr[i], 1e-5f * (1.0f + std::fabs(yr[i]))) << "q8 row " << r << " col " << c;
            ASSERT_NEAR(fo[i], fr[i], 2e-5f * (1.0f + std::fabs(fr[i]))) << "f32 row " << r << " col " << c;
          }
      }
    }
  }
}

TEST(Q4KLayout, Avx2MatchesScalar) { check_isa(kernels::Isa::kAvx2); }
TEST(Q4KLayout, Avx512VnniMatchesScalar) { check_isa(kernels::Isa::kAvx512); }

// The linear op (this CPU's kernels, both activation designs, decode and prefill row counts)
// against the fp64 product with the formula's weights.
TEST(Q4KLayout, LinearOpMatchesTheFormula) {
  std::mt19937 rng(3);
  ThreadPool pool(2);
  for (auto [N, K] : kShapes) {
    RandomQ4K q(N, K, rng);
    ops::Linear lin;
    lin.kind = ops::Linear::Kind::kQ4;
    lin.n_out = N, lin.n_in = K, lin.q4 = q.w;
    for (int M : {1, 4, 40}) {
      const std::vector<float> x = random_rows(M, K, rng);
      for (ops::Q4Act mode : {ops::Q4Act::kF32, ops::Q4Act::kQ8}) {
        ops::set_q4_act(mode);
        std::vector<float> y(size_t(M) * size_t(N));
        ops::linear(lin, x.data(), M, y.data(), pool);
        for (int r = 0; r < M; ++r)
          for (int c = 0; c < N; ++c) {
            double want = 0, mag = 0;
            for (int j = 0; j < K; ++j) {
              const double p = q.dense[size_t(c) * size_t(K) + size_t(j)] * x[size_t(r) * size_t(K) + size_t(j)];
              want += p;
              mag += std::fabs(p);
            }
            // fp32: rounding only; int8 activations: about 1/254 of each block's largest value.
            const double tol = mode == ops::Q4Act::kF32 ? 1e-5 * (1 + mag) : 1e-2 * (1 + mag);
            EXPECT_NEAR(y[size_t(r) * size_t(N) + size_t(c)], want, tol)
                << N << "x" << K << " M=" << M << " row " << r << " col " << c;
          }
      }
    }
  }
  ops::set_q4_act(ops::Q4Act::kAuto);
}

}  // namespace
}  // namespace metharme
