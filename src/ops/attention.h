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

// Prefill tile: query head h (kv head h / group) for `rows` consecutive positions pos_first.. of
// one sequence, whose keys [0, pos_first + rows) are in kv (fp32 only). q and out point at the
// head's first row (row strides ldq, ldo). Two sgemms instead of a dot product per key and token.
// scores: scratch of rows * (pos_first + rows) floats.
constexpr int kPrefillTile = 64;
void attend_prefill_tile(const float* q, int ldq, int h, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* scores);

}  // namespace metharme::ops
