// Rotary position embedding in the Hugging Face "rotate half" layout: within each head, element j
// pairs with element j + head_dim/2 and both turn by angle pos * theta^(-2j/head_dim).
#pragma once

#include <cstddef>
#include <vector>

namespace metharme::ops {

class RopeTable {
 public:
  RopeTable() = default;
  RopeTable(int head_dim, double theta, int max_pos);  // angles in double, stored as float
  int head_dim() const { return head_dim_; }
  int max_pos() const { return max_pos_; }
  const float* cos(int pos) const { return cos_.data() + size_t(pos) * size_t(head_dim_ / 2); }
  const float* sin(int pos) const { return sin_.data() + size_t(pos) * size_t(head_dim_ / 2); }

 private:
  int head_dim_ = 0, max_pos_ = 0;
  std::vector<float> cos_, sin_;  // [max_pos][head_dim/2]
};

// Rotates n_heads heads of x (contiguous, head_dim each) to position pos.
void apply_rope(float* x, int n_heads, const RopeTable& t, int pos);
// Rotates by a position delta (may be negative): moves already-rotated keys to new positions.
void apply_rope_delta(float* x, int n_heads, int head_dim, double theta, int delta);

}  // namespace metharme::ops
