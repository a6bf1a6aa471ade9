// Rotary position embedding in the Hugging Face "rotate half" layout: within each head, element j
// pairs with element j + head_dim/2 and both turn by angle pos * inv_freq[j]; with no scaling
// inv_freq[j] = theta^(-2j/head_dim).
//
// The frequencies of every scheme (util/rope_scaling.h) are computed once, as a plain array:
//   RopeFreqs::inv_freq[j], j < head_dim/2: radians per position for pair (j, j + head_dim/2),
//                                            float32 (as the reference keeps them);
//   RopeFreqs::attention_scale:             multiplies cos and sin (queries and keys alike, so a
//                                            q.k product by its square; 1 except for YaRN).
// A rotation at position p is then x0' = s*(x0*cos(p*f) - x1*sin(p*f)), x1' = s*(x1*cos(p*f) +
// x0*sin(p*f)) with the angle p*f in double. Other back ends (GPU shaders) mirror exactly this.
#pragma once

#include <cstddef>
#include <vector>

#include "util/rope_scaling.h"

namespace metharme::ops {

struct RopeFreqs {
  std::vector<float> inv_freq;  // [head_dim/2] radians per position
  float attention_scale = 1.f;  // applied to cos and sin
};

// The frequencies of `s` for a model with head size head_dim, base theta and trained context
// max_positions (config.json's max_position_embeddings). seq_len is the longest sequence the
// cache will hold: only dynamic NTK reads it (its base grows with the length; see rope.cpp).
// Parameters are range-checked by the parsers; this checks only what would divide by zero.
RopeFreqs rope_frequencies(int head_dim, double theta, const RopeScaling& s, int max_positions, int seq_len);

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(const RopeFreqs& f, int max_pos);          // angles in double, stored as float
  RopeTable(int head_dim, double theta, int max_pos);  // plain RoPE
  int head_dim() const { return head_dim_; }
  int max_pos() const { return max_pos_; }
  const RopeFreqs& freqs() const { return freqs_; }
  const float* cos(int pos) const { return cos_.data() + size_t(pos) * size_t(head_dim_ / 2); }
  const float* sin(int pos) const { return sin_.data() + size_t(pos) * size_t(head_dim_ / 2); }

 private:
  int head_dim_ = 0, max_pos_ = 0;
  RopeFreqs freqs_;
  std::vector<float> cos_, sin_;  // [max_pos][head_dim/2], attention_scale folded in
};

// Rotates n_heads heads of x (contiguous, head_dim each) to position pos.
void apply_rope(float* x, int n_heads, const RopeTable& t, int pos);
// Turns already-rotated heads by a position delta (may be negative) with the table's frequencies
// and without its attention scale (already in x): moves cached keys to new positions.
void apply_rope_delta(float* x, int n_heads, const RopeTable& t, int delta);

}  // namespace metharme::ops
