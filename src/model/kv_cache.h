// Keys and values of past positions for n_seq independent sequences.
#pragma once

#include <cstdint>

#include "formats/hf_config.h"
#include "kernels/dense.h"
#include "ops/attention.h"
#include "ops/rope.h"
#include "util/buffer.h"

namespace metharme {

// A copy of some layers' keys and values kept elsewhere (a GPU's memory), told about every move.
class KvMirror {
 public:
  virtual ~KvMirror() = default;
  virtual void shift(int seq, int src, int dst, int count, const ops::RopeTable& rope) = 0;
  virtual void copy_prefix(int from, int to, int count) = 0;
};

class KvCache {
 public:
  KvCache() = default;
  KvCache(const LlamaConfig& c, int n_ctx, int n_seq, kernels::WType type);

  int n_ctx() const { return n_ctx_; }
  int n_seq() const { return n_seq_; }
  kernels::WType type() const { return type_; }
  size_t bytes() const { return k_.size() + v_.size(); }

  ops::KvSlice slice(int layer, int seq) const;
  // Stores one position's keys (already rotated) and values, [n_kv_heads*head_dim] each.
  void store(int layer, int seq, int pos, const float* k, const float* v);
  // Moves positions [src, src+count) to start at dst (dst < src) in every layer, turning the keys
  // by (dst - src) positions with `rope`'s frequencies (the runtime's, scaling included) so they
  // are exactly as if computed there (up to rounding).
  void shift(int seq, int src, int dst, int count, const ops::RopeTable& rope);
  // Copies positions [0, count) of sequence `from` into sequence `to`.
  void copy_prefix(int from, int to, int count);
  // Layers held elsewhere (model/offload.h) follow every shift and copy_prefix.
  void set_mirror(KvMirror* m) { mirror_ = m; }

 private:
  uint8_t* row(const PageBuffer& b, int layer, int seq, int head, int pos) const;
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, n_ctx_ = 0, n_seq_ = 0;
  kernels::WType type_ = kernels::WType::kF32;
  size_t es_ = 4;
  PageBuffer k_, v_;  // [layer][seq][kv_head][pos][head_dim]
  KvMirror* mirror_ = nullptr;
};

}  // namespace metharme
