// Causal attention of query heads over a KV cache slice.
#pragma once

#include <cstdint>

#include "kernels/dense.h"

namespace metharme::ops {

// K and V of one layer and one sequence: [n_kv_heads][n_ctx][head_dim] elements of `type`.
struct KvSlice {
  kernels::WType type;
  const void* k;
  const void* v;
  int64_t head_stride;  // elements between kv heads (n_ctx * head_dim)
};

// For the `group` query heads that share kv head `g` (q rows contiguous, head_dim each):
// out_h = softmax(q_h . K_g[0..n_pos) / sqrt(head_dim)) . V_g[0..n_pos).
// scores: scratch of group * n_pos floats.
void attend_group(const float* q, int g, int group, int head_dim, const KvSlice& kv, int n_pos, float* out,
                  float* scores);

}  // namespace metharme::ops
