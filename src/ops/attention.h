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
// its own type (no dequantized copy) in one sweep (kernels/kv.h, KvKernels::decode). work:
// decode_work_floats(group, head_dim) floats, aligned for doubles.
inline size_t decode_work_floats(int group, int head_dim) { return kernels::kv_decode_work_floats(group, head_dim); }
void attend_group(const float* q, int g, int group, int head_dim, const KvSlice& kv, int n_pos, float* out,
                  float* work);

// Prefill tile: the `group` query heads of kv head g for `rows` consecutive positions
// pos_first.. of one sequence, whose keys [0, pos_first + rows) are in kv; row i sees keys
// [0, pos_first + i]. q and out point at the tile's first row and the group's first head (row
// strides ldq, ldo). Flash attention (kernels/kv.h, KvKernels::flash): the cache is streamed in
// blocks, each decoded once for every query of the tile. work: prefill_work_floats(rows * group,
// head_dim) floats, 64-byte aligned.
// Rows per tile: about kPrefillQueries queries (rows * group) share each decoded block.
constexpr int kPrefillQueries = 64;
inline int prefill_tile_rows(int group) { return group >= kPrefillQueries ? 1 : kPrefillQueries / group; }
inline size_t prefill_work_floats(int queries, int head_dim) {
  return kernels::kv_flash_work_floats(queries, head_dim);
}
void attend_prefill_tile(const float* q, int ldq, int g, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* work);

}  // namespace metharme::ops
