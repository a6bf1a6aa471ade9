// Causal attention of query heads over a KV cache slice.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/kv.h"

namespace metharme::ops {

// K and V of one layer and one sequence: [n_kv_heads][n_ctx] rows of head_dim values, each
// kernels::kv_row_bytes(type, head_dim) bytes (kernels/kv.h has the row formats).
struct KvSlice {
  kernels::KvType k_type, v_type;
  const uint8_t* k;  // kv head 0, position 0
  const uint8_t* v;
  size_t k_head_bytes, v_head_bytes;  // bytes between kv heads (n_ctx rows)
};

// For the `group` query heads that share kv head `g` (q rows contiguous, head_dim each):
// out_h = softmax(q_h . K_g[0..n_pos) / sqrt(head_dim)) . V_g[0..n_pos), reading the cache in
// its own type (no dequantized copy). scores: scratch of group * n_pos floats.
void attend_group(const float* q, int g, int group, int head_dim, const KvSlice& kv, int n_pos, float* out,
                  float* scores);

// Prefill tile: query head h (kv head h / group) for `rows` consecutive positions pos_first.. of
// one sequence, whose keys [0, pos_first + rows) are in kv. q and out point at the head's first
// row (row strides ldq, ldo). Two sgemms instead of a dot product per key and token; keys and
// values that are not f32 are first decoded into kv_scratch (2 * (pos_first + rows) * head_dim
// floats; unused, may be null, when both are f32).
// scores: scratch of rows * (pos_first + rows) floats.
constexpr int kPrefillTile = 64;
void attend_prefill_tile(const float* q, int ldq, int h, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* scores, float* kv_scratch = nullptr);

}  // namespace metharme::ops
