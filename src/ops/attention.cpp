#include "ops/attention.h"

#include <cmath>
#include <cstring>

#include "ops/elementwise.h"

namespace metharme::ops {

void attend_group(const float* q, int g, int group, int head_dim, const KvSlice& kv, int n_pos, float* out,
                  float* scores) {
  const auto& k = kernels::dense_kernels();
  const size_t es = kernels::wtype_size(kv.type);
  const uint8_t* kb = static_cast<const uint8_t*>(kv.k) + size_t(g) * size_t(kv.head_stride) * es;
  const uint8_t* vb = static_cast<const uint8_t*>(kv.v) + size_t(g) * size_t(kv.head_stride) * es;
  // scores[h][j] = q_h . K[j]
  k.gemm(kv.type, kb, head_dim, q, head_dim, scores, n_pos, group, head_dim, 0, n_pos);
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  for (int h = 0; h < group; ++h) {
    float* s = scores + size_t(h) * size_t(n_pos);
    softmax(s, n_pos, scale);
    float* o = out + size_t(h) * size_t(head_dim);
    std::memset(o, 0, size_t(head_dim) * sizeof(float));
    k.gemv_t(kv.type, vb, head_dim, s, n_pos, head_dim, o);
  }
}

}  // namespace metharme::ops
