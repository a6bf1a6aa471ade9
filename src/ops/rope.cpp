#include "ops/rope.h"

#include <cmath>

#include "util/error.h"

namespace metharme::ops {

RopeTable::RopeTable(int head_dim, double theta, int max_pos) : head_dim_(head_dim), max_pos_(max_pos) {
  const int half = head_dim / 2;
  cos_.resize(size_t(max_pos) * size_t(half));
  sin_.resize(cos_.size());
  for (int j = 0; j < half; ++j) {
    // Same as the reference: inv_freq in float32, angle computed in double.
    float inv_freq = float(1.0 / std::pow(theta, double(2 * j) / double(head_dim)));
    for (int p = 0; p < max_pos; ++p) {
      double a = double(p) * double(inv_freq);
      cos_[size_t(p) * size_t(half) + size_t(j)] = float(std::cos(a));
      sin_[size_t(p) * size_t(half) + size_t(j)] = float(std::sin(a));
    }
  }
}

static void rotate(float* x, int n_heads, int head_dim, const float* c, const float* s) {
  const int half = head_dim / 2;
  for (int h = 0; h < n_heads; ++h) {
    float* v = x + size_t(h) * size_t(head_dim);
    for (int j = 0; j < half; ++j) {
      float x0 = v[j], x1 = v[j + half];
      v[j] = x0 * c[j] - x1 * s[j];
      v[j + half] = x1 * c[j] + x0 * s[j];
    }
  }
}

void apply_rope(float* x, int n_heads, const RopeTable& t, int pos) {
  MH_CHECK(pos >= 0 && pos < t.max_pos(), "position ", pos, " is outside the RoPE table (", t.max_pos(), ")");
  rotate(x, n_heads, t.head_dim(), t.cos(pos), t.sin(pos));
}

void apply_rope_delta(float* x, int n_heads, int head_dim, double theta, int delta) {
  constexpr int kMaxHalf = 512;
  const int half = head_dim / 2;
  MH_CHECK(half <= kMaxHalf, "head_dim too large");
  float c[kMaxHalf], s[kMaxHalf];
  for (int j = 0; j < half; ++j) {
    float inv_freq = float(1.0 / std::pow(theta, double(2 * j) / double(head_dim)));
    double a = double(delta) * double(inv_freq);
    c[j] = float(std::cos(a));
    s[j] = float(std::sin(a));
  }
  rotate(x, n_heads, head_dim, c, s);
}

}  // namespace metharme::ops
