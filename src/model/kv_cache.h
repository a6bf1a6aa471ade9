// Keys and values of past positions for n_seq independent sequences.
//
// Layout (for a GPU backend as much as for the CPU kernels): keys and values are two buffers,
// each [layer][seq][kv_head][pos] rows of one kv head's head_dim values, a row being
// kernels::kv_row_bytes(type, head_dim) bytes in the element type of its buffer (f32, f16, q8 or
// q4; the block formats are described in kernels/kv.h). Keys and values may have different types
// (--kv-type-k / --kv-type-v). Keys are stored already rotated by RoPE at their position.
#pragma once

#include <cstdint>

#include "formats/hf_config.h"
#include "kernels/kv.h"
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
  KvCache(const LlamaConfig& c, int n_ctx, int n_seq, kernels::KvType k_type, kernels::KvType v_type);

  int n_ctx() const { return n_ctx_; }
  int n_seq() const { return n_seq_; }
  kernels::KvType k_type() const { return k_type_; }
  kernels::KvType v_type() const { return v_type_; }
  size_t bytes() const { return k_.size() + v_.size(); }
  // Bytes of keys and values one cached position takes over all layers and kv heads.
  size_t bytes_per_position() const;

  ops::KvSlice slice(int layer, int seq) const;
  // Stores one position's keys (already rotated) and values, [n_kv_heads*head_dim] each.
  void store(int layer, int seq, int pos, const float* k, const float* v);
  // Moves positions [src, src+count) to start at dst (dst < src) in every layer, turning the keys
  // by (dst - src) positions with `rope`'s frequencies (the runtime's, scaling included) so they
  // are exactly as if computed there (up to rounding; quantized keys are decoded, turned and
  // encoded again).
  void shift(int seq, int src, int dst, int count, const ops::RopeTable& rope);
  // Copies positions [0, count) of sequence `from` into sequence `to`.
  void copy_prefix(int from, int to, int count);
  // Layers held elsewhere (model/offload.h) follow every shift and copy_prefix.
  void set_mirror(KvMirror* m) { mirror_ = m; }

 private:
  uint8_t* row(const PageBuffer& b, size_t row_bytes, int layer, int seq, int head, int pos) const;
  uint8_t* krow(int layer, int seq, int head, int pos) const { return row(k_, krb_, layer, seq, head, pos); }
  uint8_t* vrow(int layer, int seq, int head, int pos) const { return row(v_, vrb_, layer, seq, head, pos); }
  int n_layers_ = 0, n_kv_heads_ = 0, head_dim_ = 0, n_ctx_ = 0, n_seq_ = 0;
  kernels::KvType k_type_ = kernels::KvType::kF32, v_type_ = kernels::KvType::kF32;
  size_t krb_ = 0, vrb_ = 0;  // bytes per key / value row
  PageBuffer k_, v_;          // [layer][seq][kv_head][pos] rows
  KvMirror* mirror_ = nullptr;
};

}  // namespace metharme
