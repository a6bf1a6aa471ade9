// Int4 kernels and repacking: every optimized kernel against the scalar reference on odd shapes
// (K not a multiple of the group size, N not a multiple of the tile, 1 and many rows) with fresh
// random data, the repacked layout against the GPTQ formula, and the linear op against a dense
// fp64 product.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "kernels/q4.h"
#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/half.h"

namespace metharme {
namespace {

using kernels::Isa;

struct Shape {
  int n, k, gs;      // gs = -1: one group
  bool act_order;    // scattered groups through g_idx
  bool uneven;       // g_idx with groups of different sizes
  int zero_offset;   // 1 = GPTQ v1 zeros, 0 = gptq_v2
  bool f32_scales;   // fp32 scales that fp16 cannot hold (they must stay exact)
  bool uniform_zero = false;  // every zero point 8 (GGUF Q4_0): the repack flags the matrix
};

std::ostream& operator<<(std::ostream& os, const Shape& s) {
  return os << "N" << s.n << "_K" << s.k << "_g" << s.gs << (s.act_order ? "_act" : "") << (s.uneven ? "_uneven" : "")
            << "_z" << s.zero_offset << (s.f32_scales ? "_f32scales" : "") << (s.uniform_zero ? "_uniform" : "");
}

// A random GPTQ linear in checkpoint form, with the owned arrays GptqSource points into.
struct RandomGptq {
  std::vector<uint32_t> qweight, qzeros;
  std::vector<uint16_t> scales;
  std::vector<float> scales_f32;
  std::vector<int32_t> g_idx;
  ops::GptqSource src;
  std::vector<float> dense;  // W [N][K] by the GPTQ formula

  RandomGptq(const Shape& s, std::mt19937& rng) {
    const int N = s.n, K = s.k;
    const int gs = s.gs < 0 ? K : s.gs;
    const int G = (K + gs - 1) / gs;
    std::uniform_int_distribution<uint32_t> word;
    qweight.resize(size_t((K + 7) / 8) * size_t(N));
    for (auto& w : qweight) w = word(rng);
    if (K % 8) {  // GPTQ packs zeros past K
      for (int n = 0; n < N; ++n) qweight[size_t(K / 8) * size_t(N) + size_t(n)] &= (1u << (4 * (K % 8))) - 1u;
    }
    qzeros.resize(size_t(G) * size_t((N + 7) / 8));
    for (auto& w : qzeros) w = s.uniform_zero ? 0x88888888u : word(rng) & (s.zero_offset ? 0xEEEEEEEEu : 0xFFFFFFFFu);
    std::normal_distribution<float> nd(0.0f, 0.01f);
    scales.resize(size_t(G) * size_t(N));
    for (auto& v : scales) v = f32_to_fp16(std::fabs(nd(rng)) + 1e-4f);
    if (s.f32_scales) {  // off the fp16 grid (steps of 2^-10 relative) by 3e-4 relative: rounding would show
      for (uint16_t h : scales) scales_f32.push_back(fp16_to_f32(h) * 1.0003f);
    }
    src.n = N;
    src.k = K;
    src.n_groups = G;
    src.group_size = gs;
    src.qweight = qweight.data();
    src.qzeros = qzeros.data();
    src.zero_offset = s.zero_offset;
    src.scales = s.f32_scales ? static_cast<const void*>(scales_f32.data()) : scales.data();
    src.scales_type = s.f32_scales ? kernels::WType::kF32 : kernels::WType::kF16;
    src.name = "test";
    if (s.act_order || s.uneven) {
      g_idx.resize(size_t(K));
      for (int k = 0; k < K; ++k) g_idx[size_t(k)] = k / gs;
      if (s.uneven) {
        std::uniform_int_distribution<int> gd(0, G - 1);
        for (auto& g : g_idx) g = gd(rng);
      }
      std::shuffle(g_idx.begin(), g_idx.end(), rng);
      src.g_idx = g_idx.data();
    }
    dense.resize(size_t(N) * size_t(K));
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < K; ++k) {
        int g = src.g_idx ? g_idx[size_t(k)] : k / gs;
        int code = int((qweight[size_t(k / 8) * size_t(N) + size_t(n)] >> (4 * (k % 8))) & 0xF);
        int z = int((qzeros[size_t(g) * size_t((N + 7) / 8) + size_t(n / 8)] >> (4 * (n % 8))) & 0xF) + s.zero_offset;
        const size_t si = size_t(g) * size_t(N) + size_t(n);
        dense[size_t(n) * size_t(K) + size_t(k)] = (s.f32_scales ? scales_f32[si] : fp16_to_f32(scales[si])) * float(code - z);
      }
  }
};

const Shape kShapes[] = {
    {40, 200, 64, false, false, 1, false},         // K not a multiple of the group size, N not of the tile
    {16, 256, -1, false, false, 1, false},         // one group
    {48, 384, 128, true, false, 1, false},         // act-order g128
    {33, 96, 32, true, false, 0, false},           // act-order g32, gptq_v2 zeros, N odd
    {24, 136, 32, false, true, 1, false},          // uneven groups (padding inside kernel order)
    {64, 704, -1, false, false, 1, false},         // K = 704: 64-value activation blocks
    {8, 24, -1, false, false, 1, false},           // K < 32
    {40, 200, 64, false, false, 1, true},          // fp32 scales (G0/G1 files), N and K odd
    {33, 96, 32, true, false, 0, true},            // fp32 scales with act-order
    {37, 232, 32, false, false, 0, false, true},   // one zero point everywhere (GGUF Q4_0), K and N odd
    {24, 512, 128, false, false, 0, false, true},  // the same at g128
};

std::vector<float> random_rows(int M, int K, std::mt19937& rng) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(M) * size_t(K));
  for (auto& v : x) v = nd(rng);
  // One outlier column, as real activations have.
  for (int m = 0; m < M; ++m) x[size_t(m) * size_t(K) + size_t(K / 3)] *= 20.0f;
  return x;
}

// fp64 y = x W^T; mag = sum |x W| (fp32 rounding scale); q8err = bound of the int8 activation
// error: every x moves by at most half a step, max|x| / 254, so y by sum |W| max|x| / 254.
void reference(const std::vector<float>& W, const std::vector<float>& x, int M, int N, int K, std::vector<double>& y,
               std::vector<double>& mag, std::vector<double>& q8err) {
  y.assign(size_t(M) * size_t(N), 0);
  mag.assign(y.size(), 0);
  q8err.assign(y.size(), 0);
  for (int m = 0; m < M; ++m) {
    double xmax = 0;
    for (int k = 0; k < K; ++k) xmax = std::max(xmax, double(std::fabs(x[size_t(m) * size_t(K) + size_t(k)])));
    for (int n = 0; n < N; ++n) {
      double s = 0, a = 0, wa = 0;
      for (int k = 0; k < K; ++k) {
        const double wk = W[size_t(n) * size_t(K) + size_t(k)];
        const double p = double(x[size_t(m) * size_t(K) + size_t(k)]) * wk;
        s += p;
        a += std::fabs(p);
        wa += std::fabs(wk);
      }
      y[size_t(m) * size_t(N) + size_t(n)] = s;
      mag[size_t(m) * size_t(N) + size_t(n)] = a;
      q8err[size_t(m) * size_t(N) + size_t(n)] = wa * xmax / 254 * 1.001;
    }
  }
}

class Q4Shapes : public ::testing::TestWithParam<Shape> {};

TEST_P(Q4Shapes, RepackedLayoutDequantizesToTheGptqFormula) {
  std::mt19937 rng(1234);
  RandomGptq g(GetParam(), rng);
  auto w = ops::q4_repack(g.src, 2);
  EXPECT_EQ(w->mat.kp % w->mat.gs, 0);
  EXPECT_EQ(w->mat.gs % 32, 0);
  EXPECT_EQ(w->act_order, GetParam().act_order || GetParam().uneven);
  EXPECT_EQ(w->mat.scales_f32 != nullptr, GetParam().f32_scales);
  EXPECT_EQ(w->mat.uniform_zero, GetParam().uniform_zero ? 8 : -1);
  auto d = ops::q4_dequantize(*w);
  ASSERT_EQ(d.size(), g.dense.size());
  for (size_t i = 0; i < d.size(); ++i) ASSERT_EQ(d[i], g.dense[i]) << "element " << i;
}

// Prepares activations the way ops/q4_linear.cpp does and runs one kernel table.
struct KernelRun {
  std::vector<float> xf, gsum, xd;
  std::vector<int8_t> xq;
  std::vector<int32_t> xs;

  KernelRun(const ops::Q4Weight& w, const std::vector<float>& x, int M, const kernels::Q4Kernels& k) {
    const int kp = w.mat.kp, K = w.n_in, G = w.mat.n_groups, nb = kp / w.block;
    xf.assign(size_t(M) * size_t(kp), 0);
    gsum.assign(size_t(M) * size_t(G), 0);
    xq.resize(size_t(M) * size_t(kp));
    xd.resize(size_t(M) * size_t(nb));
    xs.resize(size_t(M) * size_t(nb));
    for (int m = 0; m < M; ++m) {
      float* r = &xf[size_t(m) * size_t(kp)];
      for (int j = 0; j < kp; ++j) {
        int src = w.perm.empty() ? (j < K ? j : -1) : w.perm[size_t(j)];
        r[j] = src >= 0 ? x[size_t(m) * size_t(K) + size_t(src)] : 0.0f;
      }
      for (int gi = 0; gi < G; ++gi)
        for (int j = gi * w.mat.gs; j < (gi + 1) * w.mat.gs; ++j) gsum[size_t(m) * size_t(G) + size_t(gi)] += r[j];
      k.quantize_q8(r, kp, w.block, &xq[size_t(m) * size_t(kp)], &xd[size_t(m) * size_t(nb)], &xs[size_t(m) * size_t(nb)]);
    }
  }
  kernels::Q8Act q8(const ops::Q4Weight& w) const { return {xq.data(), xd.data(), xs.data(), w.mat.kp, w.block}; }
  kernels::F32Act f32(const ops::Q4Weight& w) const { return {xf.data(), gsum.data(), w.mat.kp, w.mat.n_groups}; }
};

void check_isa(Isa isa) {
  if (!kernels::isa_supported(isa)) GTEST_SKIP() << "this CPU has no " << kernels::isa_name(isa);
  const auto& ref = kernels::q4_kernels_scalar();
  const auto& opt = kernels::q4_kernels(isa);
  std::mt19937 rng(42 + int(isa));
  for (const Shape& s : kShapes) {
    RandomGptq g(s, rng);
    auto w = ops::q4_repack(g.src, 1);
    {
      const size_t n = size_t(w->mat.n_tiles) * kernels::kQ4TileCols * size_t(w->mat.kp);
      std::vector<float> dr(n), dopt(n);
      ref.dequant(w->mat, 0, w->mat.n_tiles, dr.data());
      opt.dequant(w->mat, 0, w->mat.n_tiles, dopt.data());
      ASSERT_EQ(dr, dopt) << s;
    }
    // 17, 33, 65, 70: more rows than one pass of the batched kernels (AVX2 16, AVX-512 32)
    for (int M : {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 33, 65, 70}) {
      SCOPED_TRACE(::testing::Message() << s << " M=" << M);
      auto x = random_rows(M, s.k, rng);
      KernelRun a(*w, x, M, ref), b(*w, x, M, opt);
      ASSERT_EQ(a.xq, b.xq);
      ASSERT_EQ(a.xs, b.xs);
      ASSERT_EQ(a.xd, b.xd);
      // A partial tile range too: the first tile is left alone.
      for (int t0 : {0, 1}) {
        if (t0 >= w->mat.n_tiles) continue;
        const float sentinel = -12345.0f;
        std::vector<float> yr(size_t(M) * size_t(s.n), sentinel), yo(yr), fr(yr), fo(yr);
        ref.gemm_q8(w->mat, a.q8(*w), M, t0, w->mat.n_tiles, yr.data(), s.n);
        opt.gemm_q8(w->mat, b.q8(*w), M, t0, w->mat.n_tiles, yo.data(), s.n);
        ref.gemm_f32(w->mat, a.f32(*w), M, t0, w->mat.n_tiles, fr.data(), s.n);
        opt.gemm_f32(w->mat, b.f32(*w), M, t0, w->mat.n_tiles, fo.data(), s.n);
        for (int m = 0; m < M; ++m)
          for (int n = 0; n < s.n; ++n) {
            const size_t i = size_t(m) * size_t(s.n) + size_t(n);
            if (n < t0 * kernels::kQ4TileCols) {
              ASSERT_EQ(yo[i], sentinel);
              ASSERT_EQ(fo[i], sentinel);
              continue;
            }
            // Integer sums are exact; the per-block fp32 steps are the same operations in the same order.
            ASSERT_NEAR(yo[i], yr[i], 1e-5f * (1.0f + std::fabs(yr[i]))) << "q8 m=" << m << " n=" << n;
            ASSERT_NEAR(fo[i], fr[i], 2e-5f * (1.0f + std::fabs(fr[i]))) << "f32 m=" << m << " n=" << n;
          }
      }
    }
  }
}

TEST(Q4Kernels, Avx2MatchesScalar) { check_isa(Isa::kAvx2); }
TEST(Q4Kernels, Avx512VnniMatchesScalar) { check_isa(Isa::kAvx512); }

// The AMX product against the scalar gemm_q8 on every shape (gs 32, 64, 128 and one group; fp16
// and fp32 scales; act-order), rows around its 16- and 32-row tiles and its 256-row pass, whole
// and partial tile ranges. Integer sums are exact; the per-block fp32 steps are those of the scalar
// twin (one product per block), so the tolerance is fp32 rounding.
TEST(Q4Kernels, AmxMatchesScalar) {
  if (!kernels::amx_supported()) GTEST_SKIP() << "this CPU or kernel has no AMX-INT8 tiles";
  const auto& ref = kernels::q4_kernels_scalar();
  const kernels::Q4GemmQ8 amx = kernels::q4_gemm_q8_amx_unchecked();
  std::mt19937 rng(4242);
  for (const Shape& s : kShapes) {
    RandomGptq g(s, rng);
    auto w = ops::q4_repack(g.src, 1);
    for (int M : {1, 15, 16, 17, 33, 50, 64, 270}) {
      SCOPED_TRACE(::testing::Message() << s << " M=" << M << " block=" << w->block);
      auto x = random_rows(M, s.k, rng);
      KernelRun a(*w, x, M, ref);
      for (int t0 : {0, 1}) {
        if (t0 >= w->mat.n_tiles) continue;
        const float sentinel = -12345.0f;
        std::vector<float> yr(size_t(M) * size_t(s.n), sentinel), yo(yr);
        ref.gemm_q8(w->mat, a.q8(*w), M, t0, w->mat.n_tiles, yr.data(), s.n);
        amx(w->mat, a.q8(*w), M, t0, w->mat.n_tiles, yo.data(), s.n);
        for (size_t i = 0; i < yr.size(); ++i) {
          if (int(i % size_t(s.n)) < t0 * kernels::kQ4TileCols) {
            ASSERT_EQ(yo[i], sentinel) << i;
            continue;
          }
          ASSERT_NEAR(yo[i], yr[i], 1e-5f * (1.0f + std::fabs(yr[i])))
              << "m=" << i / size_t(s.n) << " n=" << i % size_t(s.n);
        }
      }
    }
  }
}

// The op picks AMX from kQ4AmxMinRows rows; with it turned off (as METHARME_ISA=avx512 does) the
// AVX-512 kernel gives the same outputs within fp32 rounding.
TEST(Q4Kernels, AmxOnAndOffAgreeInTheLinearOp) {
  if (!kernels::amx_enabled()) GTEST_SKIP() << "AMX is not in use on this CPU";
  ASSERT_NE(kernels::q4_gemm_q8_amx(), nullptr) << "the AMX self-test failed";
  std::mt19937 rng(7);
  const Shape s{200, 384, 128, true, false, 1, false};
  RandomGptq g(s, rng);
  ops::Linear l;
  l.kind = ops::Linear::Kind::kQ4;
  l.n_out = s.n;
  l.n_in = s.k;
  l.q4 = ops::q4_repack(g.src, 2);
  ThreadPool pool(2);
  ops::set_q4_act(ops::Q4Act::kQ8);
  const int M = 40;
  static_assert(40 >= kernels::kQ4AmxMinRows);
  auto x = random_rows(M, s.k, rng);
  std::vector<float> on(size_t(M) * size_t(s.n)), off(on.size());
  ops::LinearOut o1{&l, on.data()}, o2{&l, off.data()};
  ops::linear_multi(&o1, 1, x.data(), M, pool);
  kernels::set_amx_enabled(false);
  ops::linear_multi(&o2, 1, x.data(), M, pool);
  kernels::set_amx_enabled(true);
  ops::set_q4_act(ops::Q4Act::kAuto);
  for (size_t i = 0; i < on.size(); ++i) ASSERT_NEAR(on[i], off[i], 1e-5f * (1.0f + std::fabs(off[i]))) << i;
}

// The scalar references themselves against fp64 on the dequantized weights.
TEST_P(Q4Shapes, ScalarKernelsMatchDenseProduct) {
  std::mt19937 rng(7);
  RandomGptq g(GetParam(), rng);
  auto w = ops::q4_repack(g.src, 1);
  const auto& ref = kernels::q4_kernels_scalar();
  const int M = 3, N = GetParam().n, K = GetParam().k;
  auto x = random_rows(M, K, rng);
  KernelRun a(*w, x, M, ref);
  std::vector<float> yq(size_t(M) * size_t(N)), yf(yq.size());
  ref.gemm_q8(w->mat, a.q8(*w), M, 0, w->mat.n_tiles, yq.data(), N);
  ref.gemm_f32(w->mat, a.f32(*w), M, 0, w->mat.n_tiles, yf.data(), N);
  std::vector<double> y, mag, q8err;
  reference(g.dense, x, M, N, K, y, mag, q8err);
  for (size_t i = 0; i < y.size(); ++i) {
    ASSERT_NEAR(yf[i], y[i], 1e-6 * mag[i] + 1e-6) << i;
    ASSERT_NEAR(yq[i], y[i], q8err[i] + 1e-5 * mag[i] + 1e-6) << i;
  }
}

// The op as the model calls it: several linears sharing x, pool threads, both activation modes.
TEST_P(Q4Shapes, LinearOpMatchesDenseProduct) {
  std::mt19937 rng(99);
  RandomGptq g1(GetParam(), rng), g2(GetParam(), rng);
  ops::Linear l1, l2;
  for (auto [l, g] : {std::pair{&l1, &g1}, std::pair{&l2, &g2}}) {
    l->kind = ops::Linear::Kind::kQ4;
    l->n_out = GetParam().n;
    l->n_in = GetParam().k;
    l->q4 = ops::q4_repack(g->src, 2);
  }
  ThreadPool pool(2);
  const int N = GetParam().n, K = GetParam().k;
  for (ops::Q4Act mode : {ops::Q4Act::kF32, ops::Q4Act::kQ8}) {
    ops::set_q4_act(mode);
    for (int M : {1, 3, 8, 20}) {
      SCOPED_TRACE(::testing::Message() << ops::q4_act_name(mode) << " M=" << M);
      auto x = random_rows(M, K, rng);
      std::vector<float> y1(size_t(M) * size_t(N)), y2(y1.size());
      ops::LinearOut outs[2] = {{&l1, y1.data()}, {&l2, y2.data()}};
      ops::linear_multi(outs, 2, x.data(), M, pool);
      for (auto [y, g] : {std::pair{&y1, &g1}, std::pair{&y2, &g2}}) {
        std::vector<double> ref, mag, q8err;
        reference(g->dense, x, M, N, K, ref, mag, q8err);
        for (size_t i = 0; i < ref.size(); ++i) {
          const double tol = 1e-5 * mag[i] + 1e-5 + (mode == ops::Q4Act::kQ8 ? q8err[i] : 0.0);
          ASSERT_NEAR((*y)[i], ref[i], tol) << i;
        }
      }
    }
  }
  ops::set_q4_act(ops::Q4Act::kAuto);
}

INSTANTIATE_TEST_SUITE_P(Shapes, Q4Shapes, ::testing::ValuesIn(kShapes));

TEST(Q4Repack, RejectsBadGroupIndex) {
  std::mt19937 rng(3);
  RandomGptq g({16, 64, 32, true, false, 1, false}, rng);
  g.g_idx[10] = 2;
  g.src.name = "layer.q_proj";
  try {
    ops::q4_repack(g.src, 1);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "layer.q_proj: g_idx[10] = 2 is outside the 2 groups of scales/qzeros");
  }
}

// fp32 scales that are all fp16 values are stored in fp16 (half the scale reads), exactly.
TEST(Q4Repack, Fp32ScalesOnTheFp16GridStayCompact) {
  std::mt19937 r1(8), r2(8);  // the same draws: h is g with fp16 scales
  RandomGptq g({40, 200, 64, false, false, 1, true}, r1), h({40, 200, 64, false, false, 1, false}, r2);
  for (size_t i = 0; i < g.scales.size(); ++i) g.scales_f32[i] = fp16_to_f32(g.scales[i]);
  auto w = ops::q4_repack(g.src, 1);
  EXPECT_EQ(w->mat.scales_f32, nullptr);
  EXPECT_TRUE(w->scales_f32.empty());
  EXPECT_EQ(ops::q4_dequantize(*w), h.dense);
  g.scales_f32[7] = 1e6f;  // beyond fp16: fp32 storage, exact
  w = ops::q4_repack(g.src, 1);
  ASSERT_NE(w->mat.scales_f32, nullptr);
  EXPECT_TRUE(w->scales.empty());
}

TEST(Q4Repack, NonZeroBiasIsApplied) {
  std::mt19937 rng(5);
  RandomGptq g({20, 64, -1, false, false, 1, false}, rng);
  std::vector<float> bias(20);
  std::iota(bias.begin(), bias.end(), 1.0f);
  g.src.bias = bias.data();
  g.src.bias_type = kernels::WType::kF32;
  ops::Linear l;
  l.kind = ops::Linear::Kind::kQ4;
  l.n_out = 20;
  l.n_in = 64;
  l.q4 = ops::q4_repack(g.src, 1);
  ThreadPool pool(1);
  std::vector<float> x(64, 0.0f), y(20);
  ops::linear(l, x.data(), 1, y.data(), pool);
  EXPECT_EQ(y, bias);
}

}  // namespace
}  // namespace metharme
