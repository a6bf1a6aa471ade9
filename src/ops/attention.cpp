#include "ops/attention.h"

#include <cblas.h>

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

void attend_prefill_tile(const float* q, int ldq, int h, int group, int head_dim, const KvSlice& kv, int pos_first,
                         int rows, float* out, int ldo, float* scores, float* kv_scratch) {
  const int g = h / group, n_keys = pos_first + rows;
  const uint8_t* kb = kv.k + size_t(g) * kv.k_head_bytes;
  const uint8_t* vb = kv.v + size_t(g) * kv.v_head_bytes;
  const float* K = reinterpret_cast<const float*>(kb);
  const float* V = reinterpret_cast<const float*>(vb);
  // Other types: decode the rows this tile sees into f32 (one pass, next to 2 * rows multiply-adds
  // per decoded value in the sgemms below).
  if (kv.k_type != kernels::KvType::kF32 || kv.v_type != kernels::KvType::kF32) {
    MH_CHECK(kv_scratch != nullptr, "attend_prefill_tile: a non-f32 KV cache needs scratch");
    float* kd = kv_scratch;
    float* vd = kv_scratch + size_t(n_keys) * size_t(head_dim);
    if (kv.k_type != kernels::KvType::kF32) {
      kernels::kv_kernels().to_f32(kv.k_type, kb, head_dim, n_keys, kd);
      K = kd;
    }
    if (kv.v_type != kernels::KvType::kF32) {
      kernels::kv_kernels().to_f32(kv.v_type, vb, head_dim, n_keys, vd);
      V = vd;
    }
  }
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
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, head_dim, n_keys, 1.0f, scores, n_keys, V, head_dim,
              0.0f, out, ldo);
}

}  // namespace metharme::ops
