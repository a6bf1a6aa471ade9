// The prefill attention tile (two sgemms per head and tile) against the per-token reference.
#include <gtest/gtest.h>

#include <random>

#include "ops/attention.h"

namespace metharme::ops {
namespace {

struct Case {
  int n_kv_heads, group, head_dim, pos_first, rows;
  kernels::KvType type = kernels::KvType::kF32;
};

class PrefillTile : public ::testing::TestWithParam<Case> {};

TEST_P(PrefillTile, MatchesTokenByTokenAttention) {
  const Case c = GetParam();
  const int n_ctx = c.pos_first + c.rows + 5, H = c.n_kv_heads * c.group, qd = H * c.head_dim;
  std::mt19937 rng(uint32_t(c.pos_first * 131 + c.rows));
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> k(size_t(c.n_kv_heads) * n_ctx * c.head_dim), v(k.size()), q(size_t(c.rows) * qd);
  for (auto& x : k) x = 2 * nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  // Rows in the cache's type (the tile decodes them; the per-token reference reads them in place).
  const size_t rb = kernels::kv_row_bytes(c.type, c.head_dim);
  std::vector<uint8_t> kc(rb * size_t(c.n_kv_heads) * n_ctx), vc(kc.size());
  kernels::kv_kernels().from_f32(c.type, k.data(), c.head_dim, c.n_kv_heads * n_ctx, kc.data());
  kernels::kv_kernels().from_f32(c.type, v.data(), c.head_dim, c.n_kv_heads * n_ctx, vc.data());
  KvSlice kv{c.type, c.type, kc.data(), vc.data(), rb * n_ctx, rb * n_ctx};
  std::vector<float> got(q.size()), want(q.size()), scores(size_t(c.rows) * n_ctx), s1(size_t(c.group) * n_ctx);
  std::vector<float> kv_scratch(2 * size_t(n_ctx) * c.head_dim);
  for (int h = 0; h < H; ++h)
    attend_prefill_tile(q.data() + h * c.head_dim, qd, h, c.group, c.head_dim, kv, c.pos_first, c.rows,
                        got.data() + h * c.head_dim, qd, scores.data(), kv_scratch.data());
  for (int i = 0; i < c.rows; ++i)
    for (int g = 0; g < c.n_kv_heads; ++g) {
      size_t off = size_t(i) * qd + size_t(g) * c.group * c.head_dim;
      attend_group(q.data() + off, g, c.group, c.head_dim, kv, c.pos_first + i + 1, want.data() + off, s1.data());
    }
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-5f) << "element " << i;
}

INSTANTIATE_TEST_SUITE_P(Shapes, PrefillTile,
                         ::testing::Values(Case{1, 1, 128, 0, 64}, Case{2, 3, 40, 37, 50}, Case{4, 2, 8, 0, 1},
                                           Case{3, 1, 33, 200, 64}, Case{2, 4, 16, 5, 17},
                                           Case{2, 2, 128, 70, 64, kernels::KvType::kQ8},
                                           Case{1, 3, 64, 13, 33, kernels::KvType::kQ4},
                                           Case{2, 1, 40, 9, 64, kernels::KvType::kQ8},
                                           Case{2, 2, 64, 31, 20, kernels::KvType::kF16}));

}  // namespace
}  // namespace metharme::ops
