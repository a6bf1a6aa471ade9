#include "model/kv_cache.h"

#include <cstring>
#include <vector>

#include "ops/rope.h"
#include "util/error.h"

namespace metharme {

KvCache::KvCache(const LlamaConfig& c, int n_ctx, int n_seq, kernels::WType type)
    : n_layers_(c.num_hidden_layers), n_kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim), n_ctx_(n_ctx),
      n_seq_(n_seq), type_(type), es_(kernels::wtype_size(type)) {
  MH_CHECK(n_ctx > 0 && n_seq > 0, "KV cache needs a positive context and sequence count");
  size_t bytes = size_t(n_layers_) * size_t(n_seq) * size_t(n_kv_heads_) * size_t(n_ctx) * size_t(head_dim_) * es_;
  k_ = PageBuffer(bytes);
  v_ = PageBuffer(bytes);
}

uint8_t* KvCache::row(const PageBuffer& b, int layer, int seq, int head, int pos) const {
  size_t idx = ((size_t(layer) * size_t(n_seq_) + size_t(seq)) * size_t(n_kv_heads_) + size_t(head)) * size_t(n_ctx_) +
               size_t(pos);
  return const_cast<uint8_t*>(b.data()) + idx * size_t(head_dim_) * es_;
}

ops::KvSlice KvCache::slice(int layer, int seq) const {
  return {type_, row(k_, layer, seq, 0, 0), row(v_, layer, seq, 0, 0), int64_t(n_ctx_) * head_dim_};
}

void KvCache::store(int layer, int seq, int pos, const float* k, const float* v) {
  const auto& kern = kernels::dense_kernels();
  for (int h = 0; h < n_kv_heads_; ++h) {
    kern.from_f32(type_, k + size_t(h) * size_t(head_dim_), row(k_, layer, seq, h, pos), head_dim_);
    kern.from_f32(type_, v + size_t(h) * size_t(head_dim_), row(v_, layer, seq, h, pos), head_dim_);
  }
}

void KvCache::shift(int seq, int src, int dst, int count, const ops::RopeTable& rope) {
  MH_CHECK(dst <= src && src + count <= n_ctx_ && dst >= 0, "KV shift out of range");
  if (count <= 0 || src == dst) return;
  if (mirror_) mirror_->shift(seq, src, dst, count, rope);
  const auto& kern = kernels::dense_kernels();
  // Positions of one head are contiguous: move each head's run at once. Keys are decoded,
  // turned by (dst - src) positions (one angle table for the whole run) and encoded at the new
  // place; the runs may overlap, so the whole run is decoded before any of it is written.
  const size_t n = size_t(count) * size_t(head_dim_);
  std::vector<float> tmp(n);
  for (int l = 0; l < n_layers_; ++l) {
    for (int h = 0; h < n_kv_heads_; ++h) {
      kern.to_f32(type_, row(k_, l, seq, h, src), tmp.data(), int64_t(n));
      ops::apply_rope_delta(tmp.data(), count, rope, dst - src);
      kern.from_f32(type_, tmp.data(), row(k_, l, seq, h, dst), int64_t(n));
      std::memmove(row(v_, l, seq, h, dst), row(v_, l, seq, h, src), n * es_);
    }
  }
}

void KvCache::copy_prefix(int from, int to, int count) {
  MH_CHECK(count <= n_ctx_, "KV copy out of range");
  if (from == to || count <= 0) return;
  if (mirror_) mirror_->copy_prefix(from, to, count);
  for (int l = 0; l < n_layers_; ++l)
    for (int h = 0; h < n_kv_heads_; ++h) {
      std::memcpy(row(k_, l, to, h, 0), row(k_, l, from, h, 0), size_t(count) * size_t(head_dim_) * es_);
      std::memcpy(row(v_, l, to, h, 0), row(v_, l, from, h, 0), size_t(count) * size_t(head_dim_) * es_);
    }
}

}  // namespace metharme
