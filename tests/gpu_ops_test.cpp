// Every GPU shader against its CPU twin (the scalar kernels and ops/) on odd shapes with fresh
// random data, on lavapipe unless another Vulkan driver is chosen (support/gpu_util.h).
// Tolerances: the shaders sum in fp32 in a different order than the references, so a dot
// product of K terms may differ by about K * 2^-24 * sum|a_i b_i| (the classic bound for
// recursive fp32 summation); each check states its bound in those terms.
#include <gtest/gtest.h>

#ifdef METHARME_HAVE_VULKAN
#include <cmath>
#include <random>

#include "gpu/ops.h"
#include "kernels/dense.h"
#include "kernels/kv.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/i8_linear.h"
#include "ops/q4_linear.h"
#include "ops/rope.h"
#include "support/gpu_util.h"
#include "util/half.h"

namespace metharme {
namespace {

constexpr double kEps32 = 1.0 / (1 << 24);

class GpuOps : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string why;
    ctx_ = test::open_test_gpu(&why);
    if (!ctx_) GTEST_SKIP() << "no Vulkan device: " << why;
  }
  gpu::Buffer put(const std::vector<float>& v) {
    gpu::Buffer b = ctx_->alloc(v.size() * 4, "test");
    ctx_->upload(b, v.data(), v.size() * 4);
    return b;
  }
  gpu::Buffer put_i(const std::vector<int32_t>& v) {
    gpu::Buffer b = ctx_->alloc(v.size() * 4, "test");
    ctx_->upload(b, v.data(), v.size() * 4);
    return b;
  }
  std::vector<float> get(gpu::Buffer b, size_t n) {
    std::vector<float> v(n);
    ctx_->download(b, v.data(), n * 4);
    return v;
  }
  std::vector<float> randn(size_t n, float sd = 1.0f) {
    std::normal_distribution<float> d(0.0f, sd);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng_);
    return v;
  }
  std::unique_ptr<gpu::Context> ctx_;
  std::mt19937 rng_{1234};
};

struct Q4Case {
  int n, k, gs;
  bool act_order;
};

TEST_F(GpuOps, Q4MatmulMatchesDequantizedProductOnOddShapes) {
  for (Q4Case c :
       {Q4Case{37, 200, 32, true}, Q4Case{16, 64, 64, false}, Q4Case{50, 300, 64, true}, Q4Case{45, 129, 128, false}}) {
    test::Gptq g(c.n, c.k, c.gs, c.act_order, rng_);
    ops::Linear l;
    l.kind = ops::Linear::Kind::kQ4;
    l.n_out = c.n;
    l.n_in = c.k;
    l.q4 = ops::q4_repack(g.src, 1);
    const std::vector<float> w = ops::q4_dequantize(*l.q4);  // [N][K], the scalar twin
    gpu::DeviceLinear d = gpu::upload_linear(*ctx_, l, "q4 test");
    for (int M : {1, 3, 8, 13}) {
      const auto x = randn(size_t(M) * c.k);
      gpu::Buffer xb = put(x), yb = ctx_->alloc(size_t(M) * c.n * 4, "y");
      ctx_->begin();
      gpu::matmul(*ctx_, d, xb, yb, M);
      ctx_->submit();
      const auto y = get(yb, size_t(M) * c.n);
      for (int m = 0; m < M; ++m)
        for (int n = 0; n < c.n; ++n) {
          double ref = 0, mag = 0;
          for (int k = 0; k < c.k; ++k) {
            const double t = double(w[size_t(n) * c.k + k]) * x[size_t(m) * c.k + k];
            ref += t;
            mag += std::fabs(t);
          }
          ASSERT_NEAR(y[size_t(m) * c.n + n], ref, 4 * c.k * kEps32 * mag + 1e-30)
              << "N" << c.n << " K" << c.k << " g" << c.gs << " M" << M << " m" << m << " n" << n;
        }
      ctx_->free(xb);
      ctx_->free(yb);
    }
    gpu::free_linear(*ctx_, d);
  }
}

// Runs w on M random rows and checks y against ref [N][K] (fp32, the scalar twin's weights).
void check_matmul(gpu::Context& ctx, const gpu::DeviceLinear& d, const std::vector<float>& ref, int N, int K, int M,
                  std::mt19937& rng, const std::string& tag) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(size_t(M) * K);
  for (auto& v : x) v = nd(rng);
  gpu::Buffer xb = ctx.alloc(x.size() * 4, "x"), yb = ctx.alloc(size_t(M) * N * 4, "y");
  ctx.upload(xb, x.data(), x.size() * 4);
  ctx.begin();
  gpu::matmul(ctx, d, xb, yb, M);
  ctx.submit();
  std::vector<float> y(size_t(M) * N);
  ctx.download(yb, y.data(), y.size() * 4);
  for (int m = 0; m < M; ++m)
    for (int n = 0; n < N; ++n) {
      double want = 0, mag = 0;
      for (int k = 0; k < K; ++k) {
        const double t = double(ref[size_t(n) * K + k]) * x[size_t(m) * K + k];
        want += t;
        mag += std::fabs(t);
      }
      ASSERT_NEAR(y[size_t(m) * N + n], want, 4 * K * kEps32 * mag + 1e-30)
          << tag << " M" << M << " m" << m << " n" << n;
    }
  ctx.free(xb);
  ctx.free(yb);
}

// GGUF Q4_1 / Q4_K as the loader repacks them: int4 codes with per-32-row offsets (identity row
// order), against ops::q4_dequantize (which adds the offsets).
TEST_F(GpuOps, Q4MatmulWithBlockOffsetsMatchesDequantizedProduct) {
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
    ASSERT_TRUE(gpu::linear_supported(l, nullptr));
    gpu::DeviceLinear d = gpu::upload_linear(*ctx_, l, "q4 offsets test");
    const auto w = ops::q4_dequantize(*q);
    for (int M : {1, 5, 9}) check_matmul(*ctx_, d, w, N, K, M, rng_, "q4+offsets N" + std::to_string(N));
    gpu::free_linear(*ctx_, d);
  }
}

// The int8-code layout (GGUF Q8_0, Q6_K with 16-row scales, Q5_K with adds) against
// ops::i8_dequantize, on column counts that leave a partial tile.
TEST_F(GpuOps, I8MatmulMatchesDequantizedProductForEachScaleLayout) {
  struct Case {
    int n, k, sb;
    bool adds;
    int lo, hi;  // code range
  };
  for (Case c :
       {Case{37, 64, 32, false, -128, 127}, Case{21, 96, 16, false, -32, 31}, Case{45, 128, 32, true, 0, 31}}) {
    const ops::Linear l = test::random_i8_linear(c.n, c.k, c.sb, c.adds, c.lo, c.hi, rng_);
    gpu::DeviceLinear d = gpu::upload_linear(*ctx_, l, "i8 test");
    const auto ref = ops::i8_dequantize(*l.i8);
    for (int M : {1, 4, 7}) check_matmul(*ctx_, d, ref, c.n, c.k, M, rng_, "i8 sb" + std::to_string(c.sb));
    gpu::free_linear(*ctx_, d);
  }
}

TEST_F(GpuOps, DenseMatmulMatchesScalarKernelForEachType) {
  using kernels::WType;
  const int N = 37, K = 77;  // odd K: f16/bf16 rows start mid-word
  for (WType t : {WType::kF32, WType::kF16, WType::kBF16}) {
    const auto wf = randn(size_t(N) * K);
    std::vector<uint8_t> raw(size_t(N) * K * kernels::wtype_size(t));
    kernels::dense_kernels_scalar().from_f32(t, wf.data(), raw.data(), int64_t(wf.size()));
    ops::Linear l = ops::make_dense_linear(t, raw.data(), N, K);
    gpu::DeviceLinear d = gpu::upload_linear(*ctx_, l, "dense test");
    for (int M : {1, 9}) {
      const auto x = randn(size_t(M) * K);
      std::vector<float> want(size_t(M) * N);
      kernels::dense_kernels_scalar().gemm(t, raw.data(), K, x.data(), K, want.data(), N, M, K, 0, N);
      gpu::Buffer xb = put(x), yb = ctx_->alloc(want.size() * 4, "y");
      ctx_->begin();
      gpu::matmul(*ctx_, d, xb, yb, M);
      ctx_->submit();
      const auto y = get(yb, want.size());
      for (size_t i = 0; i < y.size(); ++i) ASSERT_NEAR(y[i], want[i], 4 * K * kEps32 * 5 * K) << int(t) << " " << i;
      ctx_->free(xb);
      ctx_->free(yb);
    }
    gpu::free_linear(*ctx_, d);
  }
}

TEST_F(GpuOps, RmsnormSiluMulAndAddMatchOps) {
  const int M = 3, d = 301;
  const auto x = randn(size_t(M) * d, 3.0f), w = randn(d), b = randn(size_t(M) * d);
  gpu::Buffer xb = put(x), wb = put(w), ob = ctx_->alloc(x.size() * 4, "o"), bb = put(b);
  ctx_->begin();
  gpu::rmsnorm(*ctx_, xb, wb, ob, M, d, 1e-5f);
  gpu::silu_mul(*ctx_, xb, bb, M * d);  // x = silu(x) * b
  gpu::add(*ctx_, xb, bb, M * d);       // x += b
  ctx_->submit();
  const auto norm = get(ob, x.size()), sm = get(xb, x.size());
  std::vector<float> want_norm(x.size()), want_sm = x;
  for (int m = 0; m < M; ++m) ops::rmsnorm(&x[size_t(m) * d], w.data(), 1e-5f, d, &want_norm[size_t(m) * d]);
  ops::silu_mul(want_sm.data(), b.data(), M * d);
  ops::add(want_sm.data(), b.data(), M * d);
  for (size_t i = 0; i < x.size(); ++i) {
    // rmsnorm: one rounding of the sum of squares (d terms) and a few products.
    ASSERT_NEAR(norm[i], want_norm[i], (d * kEps32 + 1e-6) * std::fabs(want_norm[i]) + 1e-6) << i;
    // exp differs by a few ulp between the driver and libm.
    ASSERT_NEAR(sm[i], want_sm[i], 1e-5 * (std::fabs(want_sm[i]) + std::fabs(b[i]) + 1)) << i;
  }
}

TEST_F(GpuOps, RopeTurnsLikeTheCpuTable) {
  const int M = 4, H = 3, hd = 10, max_pos = 300;
  ops::RopeTable table(hd, 10000.0, max_pos);
  const auto x = randn(size_t(M) * H * hd);
  const std::vector<int32_t> tok = {0, 0, 7, 1, 150, 0, 299, 1};  // (position, sequence)
  std::vector<float> cs(table.cos(0), table.cos(0) + size_t(max_pos) * hd / 2);
  std::vector<float> sn(table.sin(0), table.sin(0) + size_t(max_pos) * hd / 2);
  gpu::Buffer xb = put(x), tb = put_i(tok), cb = put(cs), sb = put(sn);
  ctx_->begin();
  gpu::rope(*ctx_, xb, tb, cb, sb, M, H, hd);
  ctx_->submit();
  const auto got = get(xb, x.size());
  auto want = x;
  for (int m = 0; m < M; ++m) ops::apply_rope(&want[size_t(m) * H * hd], H, table, tok[size_t(2 * m)]);
  for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(got[i], want[i], 4 * kEps32 * (std::fabs(want[i]) + 4)) << i;
}

// kv_store writes the CPU's rows (kernels/kv.h layouts, padded to 4 bytes on the device), and
// attention over 300 positions (more than one 256-key chunk) with grouped heads matches
// ops::attend_group over the CPU cache, for every KV type and a mixed K/V pair, through both
// attention shaders (per row, and flash-style tiles of 8 rows). hd = 40: a q8 or
// q4 row is one full block of 32 and one of 8 (odd-sized, rows not word-aligned on the CPU).
TEST_F(GpuOps, KvStoreAndAttentionMatchCpuForEveryKvType) {
  using kernels::KvType;
  const int n_seq = 2, kvh = 2, H = 4, hd = 40, n_ctx = 300, group = H / kvh;
  const auto& kern = kernels::kv_kernels_scalar();
  for (auto [tk, tv] : {std::pair{KvType::kF32, KvType::kF32}, std::pair{KvType::kF16, KvType::kF16},
                        std::pair{KvType::kQ8, KvType::kQ8}, std::pair{KvType::kQ4, KvType::kQ4},
                        std::pair{KvType::kQ8, KvType::kQ4}}) {
    const std::string tag = std::string(kernels::kv_type_name(tk)) + "/" + kernels::kv_type_name(tv);
    std::vector<int32_t> tok;  // every position of both sequences, stored in one batch
    for (int s = 0; s < n_seq; ++s)
      for (int p = 0; p < n_ctx; ++p) tok.insert(tok.end(), {p, s});
    const int M = n_seq * n_ctx;
    const auto k = randn(size_t(M) * kvh * hd), v = randn(size_t(M) * kvh * hd);
    gpu::DeviceKv kv;
    kv.kv_heads = kvh;
    kv.hd = hd;
    kv.n_ctx = n_ctx;
    kv.n_seq = n_seq;
    kv.tk = tk;
    kv.tv = tv;
    kv.k = ctx_->alloc(kv.k_bytes(), "k cache");
    kv.v = ctx_->alloc(kv.v_bytes(), "v cache");
    gpu::Buffer kb = put(k), vb = put(v), tb = put_i(tok);
    ctx_->begin();
    gpu::kv_store(*ctx_, kv, kb, vb, tb, M);
    ctx_->submit();
    // The CPU cache in KvSlice layout [seq][head][pos] rows; row m of k/v is (seq, pos) = tok[m].
    const size_t krb = kernels::kv_row_bytes(tk, hd), vrb = kernels::kv_row_bytes(tv, hd);
    const size_t rsk = gpu::DeviceKv::row_stride(tk, hd), rsv = gpu::DeviceKv::row_stride(tv, hd);
    std::vector<uint8_t> kc(size_t(M) * kvh * krb), vc(size_t(M) * kvh * vrb);
    std::vector<uint8_t> kdev(kv.k_bytes()), vdev(kv.v_bytes());
    ctx_->download(kv.k, kdev.data(), kdev.size());
    ctx_->download(kv.v, vdev.data(), vdev.size());
    std::vector<float> got_row(hd), want_row(hd);
    int same_rows = 0;
    for (int m = 0; m < M; ++m)
      for (int h = 0; h < kvh; ++h) {
        const size_t row = (size_t(tok[size_t(2 * m) + 1]) * kvh + h) * n_ctx + size_t(tok[size_t(2 * m)]);
        const size_t src = (size_t(m) * kvh + h) * hd;
        kern.from_f32(tk, &k[src], hd, 1, &kc[row * krb]);
        kern.from_f32(tv, &v[src], hd, 1, &vc[row * vrb]);
        // The device's rows decode to the CPU's within one quantization step (the quantizers
        // agree but for a division or fp16 rounding landing on the other side of a tie).
        for (int part = 0; part < 2; ++part) {
          const KvType t = part ? tv : tk;
          const uint8_t* dev = part ? &vdev[row * rsv] : &kdev[row * rsk];
          const uint8_t* cpu = part ? &vc[row * vrb] : &kc[row * krb];
          same_rows += std::equal(cpu, cpu + kernels::kv_row_bytes(t, hd), dev) ? 1 : 0;
          kern.to_f32(t, dev, hd, 1, got_row.data());
          kern.to_f32(t, cpu, hd, 1, want_row.data());
          for (int e = 0; e < hd; ++e) {
            const float x = part ? v[src + size_t(e)] : k[src + size_t(e)];
            const double step = t == KvType::kQ8 ? 6.0 / 127 : t == KvType::kQ4 ? 6.0 / 8 : 1e-7;
            ASSERT_NEAR(got_row[size_t(e)], want_row[size_t(e)], 1.01 * step + 1e-3 * std::fabs(x)) << tag;
          }
        }
      }
    EXPECT_GE(same_rows, 2 * M * kvh * 99 / 100) << tag << ": the device's rows are the CPU's bytes";
    std::printf("%s: %d of %d rows byte-identical to the CPU's\n", tag.c_str(), same_rows, 2 * M * kvh);
    // Queries (pos, seq): a prefill chunk of seq 0 (positions 100..106), then rows of both
    // sequences mixed in the tiles of 8 the tiled shader takes, with 0, 255/256 and the last.
    std::vector<int32_t> qtok;
    for (int p = 100; p < 107; ++p) qtok.insert(qtok.end(), {p, 0});
    qtok.insert(qtok.end(), {0, 1, 255, 1, 256, 0, 299, 1, 17, 1, 3, 0});
    const int Mq = int(qtok.size() / 2);
    const auto q = randn(size_t(Mq) * H * hd);
    gpu::Buffer qb = put(q), qt = put_i(qtok), ob = ctx_->alloc(q.size() * 4, "att");
    gpu::Buffer ob2 = ctx_->alloc(q.size() * 4, "att tiled");
    const float scale = float(1.0 / std::sqrt(double(hd)));
    ctx_->begin();
    gpu::attention_rows(*ctx_, kv, qb, qt, ob, Mq, H, scale);
    gpu::attention_tiled(*ctx_, kv, qb, qt, ob2, Mq, H, scale);
    ctx_->submit();
    const auto got = get(ob, q.size()), got_tiled = get(ob2, q.size());
    // The reference attends over the device's own rows (converted to the CPU layout), so the
    // check is the attention shader alone.
    std::vector<uint8_t> kd(kc.size()), vd(vc.size());
    for (size_t r = 0; r < size_t(M) * kvh; ++r) {
      std::copy_n(&kdev[r * rsk], krb, &kd[r * krb]);
      std::copy_n(&vdev[r * rsv], vrb, &vd[r * vrb]);
    }
    std::vector<float> want(q.size()), work(ops::decode_work_floats(group, hd));
    for (int m = 0; m < Mq; ++m) {
      const int p = qtok[size_t(2 * m)], s = qtok[size_t(2 * m) + 1];
      const size_t rows = size_t(s) * kvh * n_ctx;
      ops::KvSlice slice{tk, tv, kd.data() + rows * krb, vd.data() + rows * vrb, n_ctx * krb, n_ctx * vrb};
      for (int g = 0; g < kvh; ++g) {
        const size_t off = size_t(m) * H * hd + size_t(g) * group * hd;
        ops::attend_group(&q[off], g, group, hd, slice, p + 1, &want[off], work.data());
      }
    }
    // Outputs are convex combinations of values (|v| < ~5): errors of exp and of the fp32 sums
    // over up to 300 keys stay below 300 * 2^-24 * 5 * a few.
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], 2e-4) << tag << " i " << i;
      ASSERT_NEAR(got_tiled[i], want[i], 2e-4) << tag << " tiled, i " << i;
    }
  }
}

}  // namespace
}  // namespace metharme
#else
TEST(GpuOps, SkippedWithoutVulkan) { GTEST_SKIP() << "this build has no Vulkan support (METHARME_VULKAN=OFF)"; }
#endif
