// The subgroup builds of the matmul shaders (q4_matmul_sg, q4_prefill_sg, i8_matmul_sg,
// dense_matmul_sg; gpu/subgroup.h) against the CPU kernels (ops::linear with fp32 activations),
// against a double-precision product of the scalar twin's weights, and against the plain shaders,
// on odd shapes; then a GPTQ model's logits through full offload with subgroups on and off.
// Two device contexts: one opened with METHARME_VK_SUBGROUPS=0 (plain shaders), one without (the
// subgroup builds; the tests skip where the device lacks them). ctest also runs this binary with
// lavapipe's subgroups of 4 and 16 lanes (LP_NATIVE_VECTOR_WIDTH; tests/CMakeLists.txt).
//
// Tolerance: every path sums the same fp32 products, each in its own order. Recursive fp32
// summation of K terms is within K 2^-24 sum|w x| of the exact sum, and the products and the
// dequantized weights add a rounding each, so each path is within 4 K 2^-24 sum|w x| of the
// double reference (as gpu_ops_test) and two paths are within twice that of each other.
#include <gtest/gtest.h>

#ifdef METHARME_HAVE_VULKAN
#include <cmath>
#include <cstdlib>
#include <random>

#include "gpu/ops.h"
#include "kernels/dense.h"
#include "ops/i8_linear.h"
#include "ops/linear.h"
#include "ops/q4_linear.h"
#include "support/gpu_util.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

constexpr double kEps32 = 1.0 / (1 << 24);

// Opens device `index` of the test driver with the subgroup builds allowed or not.
std::unique_ptr<gpu::Context> open_gpu(bool subgroups, std::string* why) {
  if (subgroups)
    unsetenv("METHARME_VK_SUBGROUPS");
  else
    setenv("METHARME_VK_SUBGROUPS", "0", 1);
  auto ctx = test::open_test_gpu(why);
  unsetenv("METHARME_VK_SUBGROUPS");
  return ctx;
}

std::vector<float> run_matmul(gpu::Context& ctx, const ops::Linear& l, const std::vector<float>& x, int M) {
  gpu::DeviceLinear d = gpu::upload_linear(ctx, l, "subgroup test");
  gpu::Buffer xb = ctx.alloc(x.size() * 4, "x"), yb = ctx.alloc(size_t(M) * l.n_out * 4, "y");
  ctx.upload(xb, x.data(), x.size() * 4);
  ctx.begin();
  gpu::matmul(ctx, d, xb, yb, M);
  ctx.submit();
  std::vector<float> y(size_t(M) * l.n_out);
  ctx.download(yb, y.data(), y.size() * 4);
  ctx.free(xb);
  ctx.free(yb);
  gpu::free_linear(ctx, d);
  return y;
}

class GpuSubgroup : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    plain_ = open_gpu(false, &why);
    if (!plain_) GTEST_SKIP() << "no Vulkan device: " << why;
    sg_ = open_gpu(true, &why);
    ASSERT_TRUE(sg_) << why;
    ASSERT_FALSE(plain_->info().subgroup_shaders) << "METHARME_VK_SUBGROUPS=0 keeps the plain shaders";
    const gpu::DeviceInfo& d = sg_->info();
    if (!d.subgroup_shaders) GTEST_SKIP() << "the device runs no subgroup shaders: " << d.subgroup_note;
    std::printf("%s: subgroups of %u, operations: %s; int4 prefill shader: %s\n", d.name.c_str(), d.subgroup_size,
                gpu::subgroup_ops_names(d.subgroup_ops).c_str(), d.subgroup_prefill ? "q4_prefill_sg" : "q4_matmul_sg");
    saved_ = ops::q4_act();
    ops::set_q4_act(ops::Q4Act::kF32);  // the CPU twin of the shaders' fp32 products
  }
  void TearDown() override { ops::set_q4_act(saved_); }

  // y = x W^T for each M on the CPU kernels and both shader paths; W [N][K] is the reference.
  void check(const ops::Linear& l, const std::vector<float>& W, const std::vector<int>& Ms, const std::string& tag) {
    const int N = l.n_out, K = l.n_in;
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (int M : Ms) {
      std::vector<float> x(size_t(M) * K), cpu(size_t(M) * N);
      for (auto& v : x) v = nd(rng_);
      ops::linear(l, x.data(), M, cpu.data(), pool_);
      const auto plain = run_matmul(*plain_, l, x, M), sg = run_matmul(*sg_, l, x, M);
      double worst = 0;
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < N; ++n) {
          double want = 0, mag = 0;
          for (int k = 0; k < K; ++k) {
            const double t = double(W[size_t(n) * K + k]) * x[size_t(m) * K + k];
            want += t;
            mag += std::fabs(t);
          }
          const size_t i = size_t(m) * N + n;
          const double tol = 4 * K * kEps32 * mag + 1e-30;
          const std::string at = tag + " M" + std::to_string(M) + " m" + std::to_string(m) + " n" + std::to_string(n);
          ASSERT_NEAR(sg[i], want, tol) << at << ": subgroup shader vs exact";
          ASSERT_NEAR(sg[i], cpu[i], 2 * tol) << at << ": subgroup shader vs CPU kernel";
          ASSERT_NEAR(sg[i], plain[i], 2 * tol) << at << ": subgroup shader vs plain shader";
          worst = std::max(worst, std::fabs(sg[i] - want) / (mag + 1e-30));
        }
      ASSERT_LE(worst, 4 * K * kEps32) << tag;
    }
  }

  std::unique_ptr<gpu::Context> plain_, sg_;
  ThreadPool pool_{2};
  std::mt19937 rng_{4321};
  ops::Q4Act saved_ = ops::Q4Act::kAuto;
};

// Decode (M = 1..8: q4_matmul_sg) and prefill (13, 70: q4_prefill_sg, two row blocks with dead
// lanes) on column counts off the 16-column tile, K needing padding, and act-order row orders.
const std::vector<int> kRows = {1, 2, 3, 4, 5, 6, 7, 8, 13, 70};

TEST_F(GpuSubgroup, Q4MatchesCpuAndPlainShadersOnOddShapes) {
  struct Case {
    int n, k, gs;
    bool act_order;
  };
  for (Case c : {Case{37, 200, 32, true}, Case{50, 300, 64, true}, Case{45, 129, 128, false}, Case{16, 64, 64, false},
                 Case{13, 520, 32, true}}) {
    test::Gptq g(c.n, c.k, c.gs, c.act_order, rng_);
    ops::Linear l;
    l.kind = ops::Linear::Kind::kQ4;
    l.n_out = c.n;
    l.n_in = c.k;
    l.q4 = ops::q4_repack(g.src, 1);
    check(l, ops::q4_dequantize(*l.q4), kRows,
          "q4 N" + std::to_string(c.n) + " K" + std::to_string(c.k) + (c.act_order ? " act-order" : ""));
  }
}

// GGUF Q4_1 / Q4_K: per-32-row offsets added from each row's block sums.
TEST_F(GpuSubgroup, Q4WithGgufBlockOffsetsMatchesCpuAndPlainShaders) {
  for (auto [N, K] : {std::pair{37, 96}, std::pair{50, 320}}) {
    test::Gptq g(N, K, 32, false, rng_);
    auto q = ops::q4_repack(g.src, 1);
    std::uniform_real_distribution<float> od(-0.05f, 0.05f);
    q->offsets.resize(size_t(N) * (K / 32));
    for (float& o : q->offsets) o = od(rng_);
    ops::Linear l;
    l.kind = ops::Linear::Kind::kQ4;
    l.n_out = N;
    l.n_in = K;
    l.q4 = q;
    check(l, ops::q4_dequantize(*q), kRows, "q4+offsets N" + std::to_string(N));
  }
}

TEST_F(GpuSubgroup, I8MatchesCpuAndPlainShaders) {
  struct Case {
    int n, k, sb;
    bool adds;
  };
  for (Case c : {Case{37, 64, 32, false}, Case{21, 96, 16, false}, Case{45, 160, 32, true}}) {
    const ops::Linear l = test::random_i8_linear(c.n, c.k, c.sb, c.adds, -128, 127, rng_);
    check(l, ops::i8_dequantize(*l.i8), {1, 3, 4, 8, 13, 70}, "i8 N" + std::to_string(c.n) + " sb" + std::to_string(c.sb));
  }
}

TEST_F(GpuSubgroup, DenseMatchesCpuAndPlainShadersForEachType) {
  using kernels::WType;
  const int N = 37, K = 77;  // odd K: f16/bf16 rows start mid-word
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (WType t : {WType::kF32, WType::kF16, WType::kBF16}) {
    std::vector<float> wf(size_t(N) * K), back(wf.size());
    for (auto& v : wf) v = nd(rng_);
    std::vector<uint8_t> raw(wf.size() * kernels::wtype_size(t));
    kernels::dense_kernels_scalar().from_f32(t, wf.data(), raw.data(), int64_t(wf.size()));
    kernels::dense_kernels_scalar().to_f32(t, raw.data(), back.data(), int64_t(wf.size()));
    check(ops::make_dense_linear(t, raw.data(), N, K), back, {1, 2, 5, 8, 9}, "dense type " + std::to_string(int(t)));
  }
}

// Logits of a 12-token prefill (q4_prefill_sg) and of decoding them one by one (q4_matmul_sg)
// through full offload of an act-order GPTQ model, with subgroups on and off, against the CPU.
// Bound as gpu_offload_test: 2e-3 + 1e-4 |logit| (fp32 reassociation through a few layers).
TEST_F(GpuSubgroup, GptqModelLogitsMatchCpuWithSubgroupsOnAndOff) {
  test::prefer_lavapipe();
  const std::string dir = test::fixture("gptq/gptq-4bit-actorder-g32");
  auto cpu = test::load_model(dir, 2, 64);
  std::vector<int> ids = {1};
  for (int i = 1; i < 12; ++i) ids.push_back(3 + (i * 37 + i * i) % (cpu.rt->n_vocab() - 3));
  const auto want = test::all_logits(*cpu.rt, ids), want_inc = test::all_logits_incremental(*cpu.rt, ids);
  for (bool on : {true, false}) {
    if (!on) setenv("METHARME_VK_SUBGROUPS", "0", 1);
    auto g = test::load_model(dir, 2, 64, 1, 512, kGpuAll);
    ASSERT_NE(g.rt->gpu(), nullptr);
    const auto got = test::all_logits(*g.rt, ids), got_inc = test::all_logits_incremental(*g.rt, ids, 0);
    unsetenv("METHARME_VK_SUBGROUPS");
    for (const auto& [a, b, what] : {std::tuple{&got, &want, "prefill"}, std::tuple{&got_inc, &want_inc, "decode"}}) {
      ASSERT_EQ(a->size(), b->size());
      double worst = 0;
      for (size_t i = 0; i < a->size(); ++i) {
        const double err = std::fabs(double((*a)[i]) - (*b)[i]);
        worst = std::max(worst, err);
        ASSERT_LE(err, 2e-3 + 1e-4 * std::fabs((*b)[i])) << what << (on ? " subgroups on" : " off") << " at " << i;
      }
      std::printf("%s, subgroups %s: max |logit diff| %.3g\n", what, on ? "on" : "off", worst);
    }
  }
}

// `info --gpu` names the subgroup operations, whether the subgroup shaders run (or why not) and
// the cooperative-matrix extension.
TEST_F(GpuSubgroup, InfoGpuReportsSubgroupShadersAndTheSwitch) {
  auto on = test::run_cli({"info", "--gpu"});
  ASSERT_EQ(on.exit_code, 0) << on.err;
  EXPECT_NE(on.out.find("subgroup operations (compute): basic"), std::string::npos) << on.out;
  EXPECT_NE(on.out.find("arithmetic"), std::string::npos) << on.out;
  EXPECT_NE(on.out.find("subgroup matmul shaders: used"), std::string::npos) << on.out;
  EXPECT_NE(on.out.find("VK_KHR_cooperative_matrix: "), std::string::npos) << on.out;
  setenv("METHARME_VK_SUBGROUPS", "0", 1);
  auto off = test::run_cli({"info", "--gpu"});
  unsetenv("METHARME_VK_SUBGROUPS");
  ASSERT_EQ(off.exit_code, 0) << off.err;
  EXPECT_NE(off.out.find("subgroup matmul shaders: not used, off (METHARME_VK_SUBGROUPS=0)"), std::string::npos)
      << off.out;
}

}  // namespace
}  // namespace metharme
#else
TEST(GpuSubgroup, SkippedWithoutVulkan) { GTEST_SKIP() << "this build has no Vulkan support (METHARME_VULKAN=OFF)"; }
#endif
