#include "ops/attention.h"

#include <cmath>

namespace metharme::ops {

void attend_group(const float* q, int g, int group, int head_dim, const KvSlice& kv, int n_pos, float* out,
                  float* work) {
  const int64_t ld = head_dim;
  const kernels::DecodeQuery d{q, ld, out, ld, group, head_dim, n_pos, float(1.0 / std::sqrt(double(head_dim))), work};
  kernels::kv_kernels().decode(kv.k_type, kv.k + size_t(g) * kv.k_head_bytes, kv.v_type,
                               kv.v + size_t(g) * kv.v_head_bytes, d);
}

void attend_prefill_tile(const float* q, int ldq, int g, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* work) {
  const kernels::FlashTile t{
      q, ldq, out, ldo, rows, group, head_dim, pos_first, float(1.0 / std::sqrt(double(head_dim))), work};
  kernels::kv_kernels().flash(kv.k_type, kv.k + size_t(g) * kv.k_head_bytes, kv.v_type,
                              kv.v + size_t(g) * kv.v_head_bytes, t);
}

}  // namespace metharme::ops
