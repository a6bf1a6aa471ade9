// The prefill attention tile (flash: blocks of keys, online softmax) against the per-token
// decode attention (attend_group), on odd shapes, depths that are not multiples of the key block,
// and every KV type (keys and values also of different types); then the two paths end to end
// through fixture models (decode logits against prefill logits).
#include "ops/attention.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>

#include "model/llama.h"
#include "support/model_util.h"
#include "support/test_util.h"

namespace metharme::ops {
namespace {

struct Case {
  int n_kv_heads, group, head_dim, pos_first, rows;
  kernels::KvType type = kernels::KvType::kF32;
  kernels::KvType v_type = type;
};

class PrefillTile : public ::testing::TestWithParam<Case> {};

TEST_P(PrefillTile, MatchesTokenByTokenAttention) {
  const Case c = GetParam();
  const int n_ctx = c.pos_first + c.rows + 5, H = c.n_kv_heads * c.group, qd = H * c.head_dim;
  const uint32_t seed = std::random_device{}();
  std::mt19937 rng(seed);
  std::normal_distribution<float> nd(0, 1);
  std::vector<float> k(size_t(c.n_kv_heads) * n_ctx * c.head_dim), v(k.size()), q(size_t(c.rows) * qd);
  for (auto& x : k) x = 2 * nd(rng);
  for (auto& x : v) x = nd(rng);
  for (auto& x : q) x = nd(rng);
  // Rows in the cache's types (both paths read them in place).
  const size_t krb = kernels::kv_row_bytes(c.type, c.head_dim), vrb = kernels::kv_row_bytes(c.v_type, c.head_dim);
  std::vector<uint8_t> kc(krb * size_t(c.n_kv_heads) * n_ctx), vc(vrb * size_t(c.n_kv_heads) * n_ctx);
  kernels::kv_kernels().from_f32(c.type, k.data(), c.head_dim, c.n_kv_heads * n_ctx, kc.data());
  kernels::kv_kernels().from_f32(c.v_type, v.data(), c.head_dim, c.n_kv_heads * n_ctx, vc.data());
  KvSlice kv{c.type, c.v_type, kc.data(), vc.data(), krb * n_ctx, vrb * n_ctx};
  std::vector<float> got(q.size(), NAN), want(q.size()), s1(decode_work_floats(c.group, c.head_dim));
  // The runtime's tiling: tiles of prefill_tile_rows(group) rows, each at its own first position.
  const int tile = prefill_tile_rows(c.group);
  std::vector<float> work(prefill_work_floats(tile * c.group, c.head_dim) + 16);
  float* w = reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(work.data()) + 63) / 64 * 64);
  for (int g = 0; g < c.n_kv_heads; ++g)
    for (int r0 = 0; r0 < c.rows; r0 += tile) {
      const size_t off = size_t(r0) * qd + size_t(g) * c.group * c.head_dim;
      attend_prefill_tile(q.data() + off, qd, g, c.group, c.head_dim, kv, c.pos_first + r0, std::min(tile, c.rows - r0),
                          got.data() + off, qd, w);
    }
  for (int i = 0; i < c.rows; ++i)
    for (int g = 0; g < c.n_kv_heads; ++g) {
      size_t off = size_t(i) * qd + size_t(g) * c.group * c.head_dim;
      attend_group(q.data() + off, g, c.group, c.head_dim, kv, c.pos_first + i + 1, want.data() + off, s1.data());
    }
  // Outputs are convex combinations of values of size ~1: float rounding over a few hundred keys
  // in two summation orders, and the vector exp's ~2 ulp.
  for (size_t i = 0; i < got.size(); ++i) ASSERT_NEAR(got[i], want[i], 2e-5f) << "element " << i << " seed " << seed;
}

using kernels::KvType;
INSTANTIATE_TEST_SUITE_P(
    Shapes, PrefillTile,
    ::testing::Values(Case{1, 1, 128, 0, 64}, Case{2, 3, 40, 37, 50}, Case{4, 2, 8, 0, 1}, Case{3, 1, 33, 200, 64},
                      Case{2, 4, 16, 5, 17}, Case{2, 2, 128, 70, 64, KvType::kQ8}, Case{1, 3, 64, 13, 33, KvType::kQ4},
                      Case{2, 1, 40, 9, 64, KvType::kQ8}, Case{2, 2, 64, 31, 20, KvType::kF16},
                      // Depths past several key blocks, not multiples of one; odd numbers of heads.
                      Case{3, 1, 128, 197, 70, KvType::kQ8}, Case{1, 5, 128, 131, 29, KvType::kQ4},
                      Case{3, 3, 64, 150, 41, KvType::kF16}, Case{1, 7, 64, 100, 23, KvType::kF32},
                      Case{5, 1, 64, 65, 66, KvType::kQ8, KvType::kQ4},
                      Case{1, 3, 128, 63, 2, KvType::kQ4, KvType::kF16},
                      Case{2, 1, 96, 129, 64, KvType::kF32, KvType::kQ8}),
    [](const auto& info) {
      const Case& c = info.param;
      return "kv" + std::to_string(c.n_kv_heads) + "x" + std::to_string(c.group) + "_hd" + std::to_string(c.head_dim) +
             "_pos" + std::to_string(c.pos_first) + "_rows" + std::to_string(c.rows) + "_" +
             kernels::kv_type_name(c.type) + "_" + kernels::kv_type_name(c.v_type);
    });

// End to end: the logits of a context fed one token at a time (decode: attend_group, one sweep of
// the cache per kv head) equal those of one batched prefill (flash tiles) over 300 positions,
// several 64-key blocks deep, for MHA and GQA (4 query heads per kv head, head_dim 32) and each
// KV type. An f32 cache holds the same values on both paths (largest difference seen 1.1e-5 on
// AVX-512, AVX2 and scalar). Rounded caches (f16, q8, q4) may round a second-layer key or value
// to the neighbouring step when the first layer's outputs differ in the last bits: largest seen
// 1.2e-3 (f16), 1.3e-2 (q8), 7e-4 (q4, whose coarser steps flip less often); the bounds are about
// 4x those (q4: 0.02, room for one flipped nibble).
struct E2eCase {
  const char* model;
  kernels::KvType k, v;
  float tol;
};

class DecodeLogits : public ::testing::TestWithParam<E2eCase> {};

TEST_P(DecodeLogits, EqualPrefillLogits) {
  const E2eCase c = GetParam();
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(test::fixture(std::string("models/") + c.model), lo);
  RuntimeOptions ro;
  ro.n_threads = 2;
  ro.n_ctx = 320;
  ro.kv_type_k = c.k;
  ro.kv_type_v = c.v;
  LlamaRuntime rt(*w, ro);
  std::mt19937 rng(7);
  std::uniform_int_distribution<int> tok(3, rt.n_vocab() - 1);
  std::vector<int> ids(300);
  for (auto& id : ids) id = tok(rng);
  const auto dec = test::all_logits_incremental(rt, ids);
  const auto pre = test::all_logits(rt, ids);
  ASSERT_EQ(dec.size(), pre.size());
  const size_t V = size_t(rt.n_vocab());
  float worst = 0;
  for (size_t t = 0; t < ids.size(); ++t) {
    const float d = test::max_abs_diff(&dec[t * V], &pre[t * V], V);
    worst = std::max(worst, d);
    ASSERT_LE(d, c.tol) << "position " << t;
  }
  RecordProperty("max_abs_diff", std::to_string(worst));
}

INSTANTIATE_TEST_SUITE_P(Models, DecodeLogits,
                         ::testing::Values(E2eCase{"llama-rand-h256", KvType::kF32, KvType::kF32, 1e-4f},
                                           E2eCase{"llama-rand-h256-gqa", KvType::kF32, KvType::kF32, 1e-4f},
                                           E2eCase{"llama-rand-h256-gqa", KvType::kF16, KvType::kF16, 5e-3f},
                                           E2eCase{"llama-rand-h256", KvType::kQ8, KvType::kQ8, 0.05f},
                                           E2eCase{"llama-rand-h256-gqa", KvType::kQ8, KvType::kQ8, 0.05f},
                                           E2eCase{"llama-rand-h256-gqa", KvType::kQ4, KvType::kQ4, 0.02f},
                                           E2eCase{"llama-rand-h256-gqa", KvType::kQ8, KvType::kF16, 0.05f}),
                         [](const auto& info) {
                           const E2eCase& c = info.param;
                           return std::string(std::string(c.model) == "llama-rand-h256" ? "mha_" : "gqa_") +
                                  kernels::kv_type_name(c.k) + "_" + kernels::kv_type_name(c.v);
                         });

}  // namespace
}  // namespace metharme::ops
