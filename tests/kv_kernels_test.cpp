// KV cache kernels (kernels/kv.h): the block formats, the AVX2 / AVX-512 attention kernels
// against their scalar twins on odd shapes and fresh random data, and KvCache's copy and shift
// on every KV type.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "kernels/kv.h"
#include "model/kv_cache.h"
#include "ops/attention.h"
#include "ops/elementwise.h"
#include "ops/rope.h"
#include "util/half.h"

namespace metharme::kernels {
namespace {

using T = KvType;

uint32_t fresh_seed() { return std::random_device{}(); }

std::vector<float> normal(size_t n, std::mt19937& rng, float sd = 1.0f) {
  std::normal_distribution<float> nd(0.f, sd);
  std::vector<float> v(n);
  for (auto& x : v) x = nd(rng);
  return v;
}

TEST(KvFormat, RowBytesAndNames) {
  EXPECT_EQ(kv_row_bytes(T::kF32, 128), 512u);
  EXPECT_EQ(kv_row_bytes(T::kF16, 128), 256u);
  EXPECT_EQ(kv_row_bytes(T::kQ8, 128), 136u);  // 4 blocks of 2 + 32
  EXPECT_EQ(kv_row_bytes(T::kQ4, 128), 72u);   // 4 blocks of 2 + 16
  EXPECT_EQ(kv_row_bytes(T::kQ8, 40), 34u + 10u);
  EXPECT_EQ(kv_row_bytes(T::kQ4, 8), 6u);
  EXPECT_EQ(kv_row_bytes(T::kQ4, 33), 18u + 3u);
  KvType t;
  EXPECT_TRUE(parse_kv_type("q8_0", &t));
  EXPECT_EQ(t, T::kQ8);
  EXPECT_TRUE(parse_kv_type("q4", &t));
  EXPECT_EQ(t, T::kQ4);
  EXPECT_FALSE(parse_kv_type("q5", &t));
  EXPECT_STREQ(kv_type_name(T::kQ4), "q4");
}

// The q8 / q4 blocks: a hand-checked block, then the error bound on random rows.
TEST(KvFormat, BlocksRoundTripWithinAStep) {
  const KvKernels& k = kv_kernels_scalar();
  float x[32];
  for (int i = 0; i < 32; ++i) x[i] = float(i - 16) / 4.0f;  // -4 .. 3.75
  uint8_t b[34];
  k.from_f32(T::kQ4, x, 32, 1, b);
  // d = -4 / -8 = 0.5; value 0 (-4) -> nibble 0, value 16 (0) -> nibble 8, value 31 (3.75) -> 7.5+8.5 = 15.
  uint16_t d;
  std::memcpy(&d, b, 2);
  EXPECT_EQ(fp16_to_f32(d), 0.5f);
  EXPECT_EQ(b[2], 0x80);          // value 0 low, value 16 high
  EXPECT_EQ(b[2 + 15] >> 4, 15);  // value 31
  k.from_f32(T::kQ8, x, 32, 1, b);
  std::memcpy(&d, b, 2);
  EXPECT_NEAR(fp16_to_f32(d), 4.0f / 127, 1e-5);
  EXPECT_EQ(int8_t(b[2]), -127);

  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  for (T t : {T::kQ8, T::kQ4})
    for (int hd : {8, 40, 64, 128}) {
      auto v = normal(size_t(hd) * 5, rng, 3.0f);
      std::vector<uint8_t> rows(kv_row_bytes(t, hd) * 5);
      std::vector<float> back(v.size());
      k.from_f32(t, v.data(), hd, 5, rows.data());
      k.to_f32(t, rows.data(), hd, 5, back.data());
      // Half a quantization step, plus what rounding the scale to fp16 (2^-11 relative) moves the
      // largest codes (127 for q8, 8 for q4); q4's codes span [-8, 7] steps (q4_0's), so a value
      // as large as the extreme but of the other sign is clamped by up to one whole step.
      const float slack = t == T::kQ8 ? 0.5f + 127.f / 2048 : 1.0f + 8.f / 2048;
      for (int r = 0; r < 5; ++r)
        for (int b0 = 0; b0 < hd; b0 += kKvBlock) {
          const size_t i0 = size_t(r) * hd + size_t(b0), len = size_t(std::min(kKvBlock, hd - b0));
          float amax = 0;
          for (size_t j = i0; j < i0 + len; ++j) amax = std::max(amax, std::fabs(v[j]));
          const float step = amax / (t == T::kQ8 ? 127.f : 8.f);
          for (size_t j = i0; j < i0 + len; ++j)
            ASSERT_LE(std::fabs(back[j] - v[j]), slack * step * 1.001f + 1e-6f)
                << kv_type_name(t) << " hd " << hd << " elem " << j << " seed " << seed;
        }
    }
}

struct Shape {
  int head_dim, n_pos, n_q;
};

class KvKernelTest : public ::testing::TestWithParam<std::tuple<Isa, T, Shape>> {
 protected:
  void SetUp() override {
    if (!isa_supported(std::get<0>(GetParam()))) GTEST_SKIP() << "CPU lacks " << isa_name(std::get<0>(GetParam()));
  }
};

TEST_P(KvKernelTest, MatchesScalarTwin) {
  const auto [isa, t, sh] = GetParam();
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  const int hd = sh.head_dim, n = sh.n_pos, nq = sh.n_q;
  const auto x = normal(size_t(n) * hd, rng, 2.0f);
  const int64_t ldq = hd + 3, lds = n + 2;  // strides that are not the widths
  const auto q = normal(size_t(nq) * size_t(ldq), rng);
  const auto p = normal(size_t(nq) * (n + 1), rng);
  std::vector<uint8_t> rows(kv_row_bytes(t, hd) * size_t(n));
  kv_kernels_scalar().from_f32(t, x.data(), hd, n, rows.data());
  const KvKernels& opt = kv_kernels(isa);
  const KvKernels& ref = kv_kernels_scalar();
  std::vector<float> so(size_t(nq) * size_t(lds), 7.0f), sr(so);
  opt.scores(t, rows.data(), hd, n, q.data(), ldq, nq, so.data(), lds);
  ref.scores(t, rows.data(), hd, n, q.data(), ldq, nq, sr.data(), lds);
  for (size_t i = 0; i < so.size(); ++i)
    ASSERT_NEAR(so[i], sr[i], 3e-4 + 1e-5 * std::fabs(sr[i])) << "score " << i << " seed " << seed;
  std::vector<float> oo = normal(size_t(nq) * hd, rng), orf = oo;
  opt.weighted_sum(t, rows.data(), hd, n, p.data(), n + 1, nq, oo.data(), hd);
  ref.weighted_sum(t, rows.data(), hd, n, p.data(), n + 1, nq, orf.data(), hd);
  for (size_t i = 0; i < oo.size(); ++i)
    ASSERT_NEAR(oo[i], orf[i], 3e-4 + 1e-5 * std::fabs(orf[i])) << "output " << i << " seed " << seed;
  std::vector<float> fo(x.size()), fr(x.size());
  opt.to_f32(t, rows.data(), hd, n, fo.data());
  ref.to_f32(t, rows.data(), hd, n, fr.data());
  EXPECT_EQ(fo, fr) << "seed " << seed;
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvKernelTest,
                         ::testing::Combine(::testing::Values(Isa::kAvx2, Isa::kAvx512),
                                            ::testing::Values(T::kQ8, T::kQ4, T::kF16, T::kF32),
                                            ::testing::Values(Shape{64, 1, 1}, Shape{128, 7, 1}, Shape{128, 33, 2},
                                                              Shape{64, 130, 3}, Shape{128, 5, 4}, Shape{64, 9, 5},
                                                              Shape{128, 18, 8}, Shape{40, 11, 3}, Shape{8, 6, 2})),
                         [](const auto& info) {
                           const Shape s = std::get<2>(info.param);
                           return std::string(std::get<0>(info.param) == Isa::kAvx2 ? "avx2" : "avx512") + "_" +
                                  kv_type_name(std::get<1>(info.param)) + "_hd" + std::to_string(s.head_dim) + "_pos" +
                                  std::to_string(s.n_pos) + "_q" + std::to_string(s.n_q);
                         });

// The flash prefill tile of each ISA against the scalar twin (one key at a time, double sums):
// every key/value type pair, head_dim 128 / 64 / 40 (padded vectors), odd query-head counts, a
// first position and row count that are not multiples of the key block, strides past the widths.
struct FlashShape {
  int head_dim, n_q, pos0, rows;
};

class KvFlashTest : public ::testing::TestWithParam<std::tuple<Isa, FlashShape>> {
 protected:
  void SetUp() override {
    if (!isa_supported(std::get<0>(GetParam()))) GTEST_SKIP() << "CPU lacks " << isa_name(std::get<0>(GetParam()));
  }
};

TEST_P(KvFlashTest, MatchesScalarTwin) {
  const auto [isa, sh] = GetParam();
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  const int hd = sh.head_dim, n_keys = sh.pos0 + sh.rows;
  const int64_t ldq = int64_t(sh.n_q) * hd + 5, ldo = ldq + 2;
  const auto q = normal(size_t(sh.rows) * size_t(ldq), rng);
  const auto kx = normal(size_t(n_keys) * hd, rng, 2.0f), vx = normal(kx.size(), rng);
  std::vector<float> work(kv_flash_work_floats(sh.rows * sh.n_q, hd) + 16);
  float* w = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) / 64 * 64);
  for (T kt : {T::kQ8, T::kQ4, T::kF16, T::kF32})
    for (T vt : {T::kQ8, T::kF32, T::kQ4}) {
      std::vector<uint8_t> kr(kv_row_bytes(kt, hd) * size_t(n_keys)), vr(kv_row_bytes(vt, hd) * size_t(n_keys));
      kv_kernels_scalar().from_f32(kt, kx.data(), hd, n_keys, kr.data());
      kv_kernels_scalar().from_f32(vt, vx.data(), hd, n_keys, vr.data());
      std::vector<float> got(size_t(sh.rows) * size_t(ldo), 9.0f), want(got);
      const float scale = 1.0f / std::sqrt(float(hd));
      kv_kernels(isa).flash(kt, kr.data(), vt, vr.data(),
                            {q.data(), ldq, got.data(), ldo, sh.rows, sh.n_q, hd, sh.pos0, scale, w});
      kv_kernels_scalar().flash(kt, kr.data(), vt, vr.data(),
                                {q.data(), ldq, want.data(), ldo, sh.rows, sh.n_q, hd, sh.pos0, scale, w});
      for (size_t i = 0; i < got.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 2e-5) << kv_type_name(kt) << "/" << kv_type_name(vt) << " element " << i
                                           << " seed " << seed;  // the padding between rows is left alone too
    }
}

INSTANTIATE_TEST_SUITE_P(Shapes, KvFlashTest,
                         ::testing::Combine(::testing::Values(Isa::kAvx2, Isa::kAvx512),
                                            ::testing::Values(FlashShape{128, 1, 131, 64}, FlashShape{64, 3, 70, 21},
                                                              FlashShape{40, 5, 0, 13}, FlashShape{128, 7, 63, 9},
                                                              FlashShape{64, 1, 0, 1}, FlashShape{128, 2, 200, 3})),
                         [](const auto& info) {
                           const FlashShape s = std::get<1>(info.param);
                           return std::string(std::get<0>(info.param) == Isa::kAvx2 ? "avx2" : "avx512") + "_hd" +
                                  std::to_string(s.head_dim) + "_q" + std::to_string(s.n_q) + "_pos" +
                                  std::to_string(s.pos0) + "_rows" + std::to_string(s.rows);
                         });

// The one-sweep decode kernel of each ISA (and the scalar twin itself) against the scalar twin and
// against the two-pass path it replaced (all scores, softmax, weighted sum, with that ISA's
// kernels): every key/value type pair, head_dim not a multiple of 32 (the scalar tail), position
// counts around the 64-key block, GQA groups, strides past the widths.
struct DecodeShape {
  int head_dim, n_pos, n_q;
};

class KvDecodeTest : public ::testing::TestWithParam<std::tuple<Isa, DecodeShape>> {
 protected:
  void SetUp() override {
    if (!isa_supported(std::get<0>(GetParam()))) GTEST_SKIP() << "CPU lacks " << isa_name(std::get<0>(GetParam()));
  }
};

// The decode path before the one-sweep kernel (ops/attention.cpp until issue 16).
void two_pass_decode(const KvKernels& k, T kt, const uint8_t* kr, T vt, const uint8_t* vr, const float* q, int64_t ldq,
                     int n_q, int hd, int n_pos, float scale, float* out, int64_t ldo) {
  std::vector<float> s(size_t(n_q) * size_t(n_pos));
  k.scores(kt, kr, hd, n_pos, q, ldq, n_q, s.data(), n_pos);
  for (int h = 0; h < n_q; ++h) ops::softmax(s.data() + size_t(h) * size_t(n_pos), n_pos, scale);
  for (int h = 0; h < n_q; ++h) std::fill(out + h * ldo, out + h * ldo + hd, 0.0f);
  k.weighted_sum(vt, vr, hd, n_pos, s.data(), n_pos, n_q, out, ldo);
}

TEST_P(KvDecodeTest, MatchesScalarTwinAndTwoPassPath) {
  const auto [isa, sh] = GetParam();
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  const int hd = sh.head_dim, n = sh.n_pos;
  const int64_t ldq = hd + 3, ldo = hd + 5;
  const auto q = normal(size_t(sh.n_q) * size_t(ldq), rng);
  const auto kx = normal(size_t(n) * hd, rng, 2.0f), vx = normal(kx.size(), rng);
  std::vector<double> work((ops::decode_work_floats(sh.n_q, hd) + 1) / 2);
  float* w = reinterpret_cast<float*>(work.data());
  const float scale = 1.0f / std::sqrt(float(hd));
  for (T kt : {T::kQ8, T::kQ4, T::kF16, T::kF32})
    for (T vt : {T::kQ8, T::kQ4, T::kF16, T::kF32}) {
      std::vector<uint8_t> kr(kv_row_bytes(kt, hd) * size_t(n)), vr(kv_row_bytes(vt, hd) * size_t(n));
      kv_kernels_scalar().from_f32(kt, kx.data(), hd, n, kr.data());
      kv_kernels_scalar().from_f32(vt, vx.data(), hd, n, vr.data());
      std::vector<float> got(size_t(sh.n_q) * size_t(ldo), 9.0f), want(got), old(got);
      kv_kernels(isa).decode(kt, kr.data(), vt, vr.data(), {q.data(), ldq, got.data(), ldo, sh.n_q, hd, n, scale, w});
      kv_kernels_scalar().decode(kt, kr.data(), vt, vr.data(),
                                 {q.data(), ldq, want.data(), ldo, sh.n_q, hd, n, scale, w});
      two_pass_decode(kv_kernels(isa), kt, kr.data(), vt, vr.data(), q.data(), ldq, sh.n_q, hd, n, scale, old.data(),
                      ldo);
      // Outputs are convex combinations of values of size ~1 (|v| < 5): fp32 sums over up to 1000
      // positions in another order, and the vector exp's ~2 ulp. The padding is left alone.
      for (size_t i = 0; i < got.size(); ++i) {
        ASSERT_NEAR(got[i], want[i], 3e-5)
            << kv_type_name(kt) << "/" << kv_type_name(vt) << " element " << i << " seed " << seed;
        ASSERT_NEAR(got[i], old[i], 3e-5)
            << kv_type_name(kt) << "/" << kv_type_name(vt) << " two-pass, element " << i << " seed " << seed;
      }
    }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, KvDecodeTest,
    ::testing::Combine(::testing::Values(Isa::kScalar, Isa::kAvx2, Isa::kAvx512),
                       ::testing::Values(DecodeShape{128, 1, 1}, DecodeShape{128, 2, 1}, DecodeShape{128, 63, 1},
                                         DecodeShape{128, 65, 1}, DecodeShape{128, 1000, 1}, DecodeShape{128, 130, 4},
                                         DecodeShape{64, 1000, 8}, DecodeShape{64, 65, 3}, DecodeShape{40, 63, 2},
                                         DecodeShape{80, 200, 5}, DecodeShape{33, 65, 1}, DecodeShape{8, 2, 7},
                                         DecodeShape{96, 129, 2})),
    [](const auto& info) {
      const DecodeShape s = std::get<1>(info.param);
      const Isa isa = std::get<0>(info.param);
      return std::string(isa == Isa::kScalar ? "scalar"
                         : isa == Isa::kAvx2 ? "avx2"
                                             : "avx512") +
             "_hd" + std::to_string(s.head_dim) + "_pos" + std::to_string(s.n_pos) + "_q" + std::to_string(s.n_q);
    });

// attend_group over a quantized cache equals attention over the same values decoded to f32.
TEST(KvAttention, QuantizedCacheEqualsItsDecodedValues) {
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  for (T t : {T::kQ8, T::kQ4})
    for (int hd : {64, 128, 40}) {
      const int n_ctx = 37, n_kv = 2, group = 3, n = 29;
      const auto x = normal(size_t(n_kv) * n_ctx * hd, rng, 2.0f), y = normal(x.size(), rng);
      const size_t rb = kv_row_bytes(t, hd);
      std::vector<uint8_t> kq(rb * size_t(n_kv * n_ctx)), vq(kq.size());
      kv_kernels().from_f32(t, x.data(), hd, n_kv * n_ctx, kq.data());
      kv_kernels().from_f32(t, y.data(), hd, n_kv * n_ctx, vq.data());
      std::vector<float> kf(x.size()), vf(x.size());
      kv_kernels().to_f32(t, kq.data(), hd, n_kv * n_ctx, kf.data());
      kv_kernels().to_f32(t, vq.data(), hd, n_kv * n_ctx, vf.data());
      ops::KvSlice sq{t, t, kq.data(), vq.data(), rb * n_ctx, rb * n_ctx};
      ops::KvSlice sf{T::kF32,
                      T::kF32,
                      reinterpret_cast<const uint8_t*>(kf.data()),
                      reinterpret_cast<const uint8_t*>(vf.data()),
                      size_t(n_ctx) * hd * 4,
                      size_t(n_ctx) * hd * 4};
      const auto q = normal(size_t(group) * hd, rng);
      std::vector<float> a(q.size()), b(q.size()), s(ops::decode_work_floats(group, hd));
      for (int g = 0; g < n_kv; ++g) {
        ops::attend_group(q.data(), g, group, hd, sq, n, a.data(), s.data());
        ops::attend_group(q.data(), g, group, hd, sf, n, b.data(), s.data());
        for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], 2e-5) << kv_type_name(t) << " seed " << seed;
      }
    }
}

LlamaConfig cache_config(int hd) {
  LlamaConfig c;
  c.num_hidden_layers = 2;
  c.num_key_value_heads = 2;
  c.num_attention_heads = 4;
  c.head_dim = hd;
  return c;
}

// copy_prefix copies every byte of every type; shift moves values' bytes and turns keys so that
// they decode to (the decoded keys turned by the position delta), within one quantization step.
TEST(KvCacheTypes, CopyPrefixAndShiftOnEveryType) {
  const uint32_t seed = fresh_seed();
  std::mt19937 rng(seed);
  for (T t : {T::kF32, T::kF16, T::kQ8, T::kQ4})
    for (int hd : {64, 40}) {
      const LlamaConfig c = cache_config(hd);
      const int n_ctx = 24, kvd = c.num_key_value_heads * hd;
      KvCache kv(c, n_ctx, 2, t, t);
      const auto ks = normal(size_t(n_ctx) * kvd * 2, rng), vs = normal(ks.size(), rng);
      for (int l = 0; l < 2; ++l)
        for (int p = 0; p < n_ctx; ++p)
          kv.store(l, 0, p, ks.data() + size_t(l * n_ctx + p) * kvd, vs.data() + size_t(l * n_ctx + p) * kvd);
      const size_t rb = kv_row_bytes(t, hd), head = rb * n_ctx;
      kv.copy_prefix(0, 1, 20);
      for (int l = 0; l < 2; ++l)
        for (int g = 0; g < 2; ++g) {
          const uint8_t* a = kv.slice(l, 0).k + g * head;
          const uint8_t* b = kv.slice(l, 1).k + g * head;
          ASSERT_EQ(0, std::memcmp(a, b, rb * 20)) << kv_type_name(t);
          ASSERT_NE(0, std::memcmp(a + rb * 20, b + rb * 20, rb * 4)) << "copied past the prefix";
          ASSERT_EQ(0, std::memcmp(kv.slice(l, 0).v + g * head, kv.slice(l, 1).v + g * head, rb * 20));
        }
      // Expected: positions 9..20 of sequence 1 decoded, turned by -6, land at 3..14.
      std::vector<float> want(size_t(12) * hd), got(want.size());
      std::vector<uint8_t> vals(rb * 12);
      const uint8_t* k1 = kv.slice(1, 1).k + head;  // layer 1, kv head 1
      kv_kernels().to_f32(t, k1 + rb * 9, hd, 12, want.data());
      const ops::RopeTable rope(hd, 10000.0, n_ctx);
      ops::apply_rope_delta(want.data(), 12, rope, -6);
      std::memcpy(vals.data(), kv.slice(1, 1).v + head + rb * 9, rb * 12);
      kv.shift(1, 9, 3, 12, rope);
      kv_kernels().to_f32(t, k1 + rb * 3, hd, 12, got.data());
      float amax = 0;
      for (float w : want) amax = std::max(amax, std::fabs(w));
      const float tol = t == T::kF32 ? 1e-6f : t == T::kF16 ? 2e-3f * amax : t == T::kQ8 ? amax / 127 : amax / 8;
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], tol) << kv_type_name(t) << " hd " << hd << " elem " << i << " seed " << seed;
      EXPECT_EQ(0, std::memcmp(vals.data(), kv.slice(1, 1).v + head + rb * 3, rb * 12)) << "values move as bytes";
      EXPECT_EQ(0, std::memcmp(kv.slice(0, 1).k, kv.slice(0, 0).k, rb * 3)) << "keys before dst stay";
    }
}

}  // namespace
}  // namespace metharme::kernels
