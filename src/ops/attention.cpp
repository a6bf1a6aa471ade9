#include "ops/attention.h"

#include <cmath>
#include <cstring>

#include "ops/elementwise.h"
#include "util/error.h"

namespace metharme::ops {

void attend_group(const float* q, int g, int group, int head_dim, const KvSlice& kv, int n_pos, float* out,
                  float* scores) {
  const auto& k = kernels::kv_kernels();
  const uint8_t* kb = kv.k + size_t(g) * kv.k_head_bytes;
  const uint8_t* vb = kv.v + size_t(g) * kv.v_head_bytes;
  // scores[h][j] = q_h . K[j]
  k.scores(kv.k_type, kb, head_dim, n_pos, q, head_dim, group, scores, n_pos);
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  for (int h = 0; h < group; ++h) softmax(scores + size_t(h) * size_t(n_pos), n_pos, scale);
  std::memset(out, 0, size_t(group) * size_t(head_dim) * sizeof(float));
  k.weighted_sum(kv.v_type, vb, head_dim, n_pos, scores, n_pos, group, out, head_dim);
}

void attend_prefill_tile(const float* q, int ldq, int g, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* work) {
  const kernels::FlashTile t{
      q, ldq, out, ldo, rows, group, head_dim, pos_first, float(1.0 / std::sqrt(double(head_dim))), work};
  kernels::kv_kernels().flash(kv.k_type, kv.k + size_t(g) * kv.k_head_bytes, kv.v_type,
                              kv.v + size_t(g) * kv.v_head_bytes, t);
}

}  // namespace metharme::ops
