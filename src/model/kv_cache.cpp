#include "model/kv_cache.h"

#include <cstring>
#include <vector>

#include "ops/rope.h"
#include "util/error.h"

namespace metharme {

KvCache::KvCache(const LlamaConfig& c, int n_ctx, int n_seq, kernels::KvType k_type, kernels::KvType v_type)
    : n_layers_(c.num_hidden_layers),
      n_kv_heads_(c.num_key_value_heads),
      head_dim_(c.head_dim),
      n_ctx_(n_ctx),
      n_seq_(n_seq),
      k_type_(k_type),
      v_type_(v_type),
      krb_(kernels::kv_row_bytes(k_type, c.head_dim)),
      vrb_(kernels::kv_row_bytes(v_type, c.head_dim)) {
  MH_CHECK(n_ctx > 0 && n_seq > 0, "KV cache needs a positive context and sequence count");
  const size_t rows = size_t(n_layers_) * size_t(n_seq) * size_t(n_kv_heads_) * size_t(n_ctx);
  k_ = PageBuffer(rows * krb_);
  v_ = PageBuffer(rows * vrb_);
}

size_t KvCache::bytes_per_position() const { return size_t(n_layers_) * size_t(n_kv_heads_) * (krb_ + vrb_); }

uint8_t* KvCache::row(const PageBuffer& b, size_t row_bytes, int layer, int seq, int head, int pos) const {
  size_t idx = ((size_t(layer) * size_t(n_seq_) + size_t(seq)) * size_t(n_kv_heads_) + size_t(head)) * size_t(n_ctx_) +
               size_t(pos);
  return const_cast<uint8_t*>(b.data()) + idx * row_bytes;
}

ops::KvSlice KvCache::slice(int layer, int seq) const {
  return {
      k_type_, v_type_, krow(layer, seq, 0, 0), vrow(layer, seq, 0, 0), size_t(n_ctx_) * krb_, size_t(n_ctx_) * vrb_};
}

void KvCache::store(int layer, int seq, int pos, const float* k, const float* v) {
  const auto& kern = kernels::kv_kernels();
  for (int h = 0; h < n_kv_heads_; ++h) {
    kern.from_f32(k_type_, k + size_t(h) * size_t(head_dim_), head_dim_, 1, krow(layer, seq, h, pos));
    kern.from_f32(v_type_, v + size_t(h) * size_t(head_dim_), head_dim_, 1, vrow(layer, seq, h, pos));
  }
}

void KvCache::shift(int seq, int src, int dst, int count, const ops::RopeTable& rope) {
  MH_CHECK(dst <= src && src + count <= n_ctx_ && dst >= 0, "KV shift out of range");
  if (count <= 0 || src == dst) return;
  if (mirror_) mirror_->shift(seq, src, dst, count, rope);
  const auto& kern = kernels::kv_kernels();
  // Positions of one head are contiguous: move each head's run at once. Keys are decoded,
  // turned by (dst - src) positions (one angle table for the whole run) and encoded at the new
  // place; the runs may overlap, so the whole run is decoded before any of it is written.
  // Values only move (their bytes, whatever the type).
  std::vector<float> tmp(size_t(count) * size_t(head_dim_));
  for (int l = 0; l < n_layers_; ++l) {
    for (int h = 0; h < n_kv_heads_; ++h) {
      kern.to_f32(k_type_, krow(l, seq, h, src), head_dim_, count, tmp.data());
      ops::apply_rope_delta(tmp.data(), count, rope, dst - src);
      kern.from_f32(k_type_, tmp.data(), head_dim_, count, krow(l, seq, h, dst));
      std::memmove(vrow(l, seq, h, dst), vrow(l, seq, h, src), size_t(count) * vrb_);
    }
  }
}

void KvCache::copy_prefix(int from, int to, int count) {
  MH_CHECK(count <= n_ctx_, "KV copy out of range");
  if (from == to || count <= 0) return;
  if (mirror_) mirror_->copy_prefix(from, to, count);
  for (int l = 0; l < n_layers_; ++l)
    for (int h = 0; h < n_kv_heads_; ++h) {
      std::memcpy(krow(l, to, h, 0), krow(l, from, h, 0), size_t(count) * krb_);
      std::memcpy(vrow(l, to, h, 0), vrow(l, from, h, 0), size_t(count) * vrb_);
    }
}

}  // namespace metharme
