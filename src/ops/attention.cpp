#include "ops/attention.h"

#include <cblas.h>

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

void attend_prefill_tile(const float* q, int ldq, int h, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* scores) {
  const int g = h / group, n_keys = pos_first + rows;
  const float* K = static_cast<const float*>(kv.k) + int64_t(g) * kv.head_stride;
  const float* V = static_cast<const float*>(kv.v) + int64_t(g) * kv.head_stride;
  // S = Q K^T over every key the tile's last row sees; row i sees keys [0, pos_first + i].
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, n_keys, head_dim, 1.0f, q, ldq, K, head_dim, 0.0f, scores,
              n_keys);
  const float scale = float(1.0 / std::sqrt(double(head_dim)));
  for (int i = 0; i < rows; ++i) {
    float* s = scores + int64_t(i) * n_keys;
    const int n = pos_first + i + 1;
    softmax(s, n, scale);
    std::memset(s + n, 0, size_t(n_keys - n) * sizeof(float));
  }
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, n_keys, 1.0f, scores, n_keys, V, head_dim, 0.0f,
              out, ldo);
}

}  // namespace metharme::ops
