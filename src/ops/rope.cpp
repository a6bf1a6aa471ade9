#include "ops/rope.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "util/error.h"

namespace metharme::ops {

namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

// theta^(-2j/dim) in double; the callers round to float32 once at the end.
double plain_inv_freq(double theta, int j, int dim) { return 1.0 / std::pow(theta, double(2 * j) / double(dim)); }

// YaRN's attention factor for an extension `scale`: 1 + 0.1 * m * ln(scale), 1 when not extending.
double yarn_mscale(double scale, double m) { return scale <= 1 ? 1.0 : 0.1 * m * std::log(scale) + 1.0; }

// The dimension index at which a frequency turns `rotations` times over `positions` positions.
double yarn_dim(double rotations, int dim, double theta, int positions) {
  return double(dim) * std::log(double(positions) / (rotations * kTwoPi)) / (2 * std::log(theta));
}

void yarn(int dim, double theta, const RopeScaling& s, int orig, RopeFreqs& f) {
  const double factor = s.factor;
  if (s.attention_factor > 0)
    f.attention_scale = float(s.attention_factor);
  else if (s.mscale != 0 && s.mscale_all_dim != 0)
    f.attention_scale = float(yarn_mscale(factor, s.mscale) / yarn_mscale(factor, s.mscale_all_dim));
  else
    f.attention_scale = float(yarn_mscale(factor, 1.0));
  // Pairs below `low` keep their frequency (they turn many times within the trained context),
  // pairs above `high` are interpolated like linear scaling, a linear ramp in between.
  double low = yarn_dim(s.beta_fast, dim, theta, orig), high = yarn_dim(s.beta_slow, dim, theta, orig);
  if (s.truncate) low = std::floor(low), high = std::ceil(high);
  low = std::max(low, 0.0);
  high = std::min(high, double(dim - 1));
  if (low == high) high += 0.001;
  for (int j = 0; j < dim / 2; ++j) {
    const double extra = plain_inv_freq(theta, j, dim), inter = extra / factor;
    const double ramp = std::clamp((double(j) - low) / (high - low), 0.0, 1.0);
    f.inv_freq[size_t(j)] = float(inter * ramp + extra * (1 - ramp));
  }
}

void llama3(int dim, double theta, const RopeScaling& s, int orig, RopeFreqs& f) {
  const double low_wavelen = orig / s.low_freq_factor, high_wavelen = orig / s.high_freq_factor;
  for (int j = 0; j < dim / 2; ++j) {
    const double inv = plain_inv_freq(theta, j, dim), wavelen = kTwoPi / inv;
    double v = inv;  // short wavelengths: as trained
    if (wavelen > low_wavelen) {
      v = inv / s.factor;  // long ones: interpolated
    } else if (wavelen >= high_wavelen) {
      const double smooth = (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
      v = (1 - smooth) * inv / s.factor + smooth * inv;
    }
    f.inv_freq[size_t(j)] = float(v);
  }
}

}  // namespace

RopeFreqs rope_frequencies(int head_dim, double theta, const RopeScaling& s, int max_positions, int seq_len) {
  MH_CHECK(head_dim >= 2 && head_dim % 2 == 0, "RoPE needs an even head size, got ", head_dim);
  MH_CHECK(theta > 1 && std::isfinite(theta), "RoPE base ", theta, " is out of range");
  MH_CHECK(max_positions > 0, "RoPE needs a positive trained context");
  MH_CHECK(s.factor > 0 && std::isfinite(s.factor), "RoPE scaling factor ", s.factor, " is out of range");
  const int dim = head_dim, half = head_dim / 2;
  const int orig = s.original_max_positions > 0 ? s.original_max_positions : max_positions;
  RopeFreqs f;
  f.inv_freq.resize(size_t(half));
  switch (s.kind) {
    case RopeKind::kNone:
    case RopeKind::kLinear: {
      const double div = s.kind == RopeKind::kLinear ? s.factor : 1.0;
      for (int j = 0; j < half; ++j) f.inv_freq[size_t(j)] = float(plain_inv_freq(theta, j, dim) / div);
      break;
    }
    case RopeKind::kDynamic: {
      // Hugging Face recomputes the base for every forward call from the current length; keys
      // already in a cache keep the angles of the base they were computed with. Here the base is
      // computed once, for the longest sequence the cache holds (seq_len = the context size), so
      // every cached key and query share one base and a context shift stays exact. At contexts
      // within max_positions this is plain RoPE, as in Hugging Face.
      MH_CHECK(dim > 2, "dynamic RoPE scaling needs a head size above 2");
      const double len = std::max(seq_len, max_positions);
      const double base =
          theta * std::pow(s.factor * len / max_positions - (s.factor - 1), double(dim) / double(dim - 2));
      for (int j = 0; j < half; ++j) f.inv_freq[size_t(j)] = float(plain_inv_freq(base, j, dim));
      break;
    }
    case RopeKind::kYarn:
      yarn(dim, theta, s, orig, f);
      break;
    case RopeKind::kLlama3:
      MH_CHECK(s.high_freq_factor > s.low_freq_factor && s.low_freq_factor > 0,
               "llama3 RoPE scaling needs 0 < low_freq_factor < high_freq_factor");
      llama3(dim, theta, s, orig, f);
      break;
  }
  return f;
}

RopeTable::RopeTable(const RopeFreqs& f, int max_pos)
    : head_dim_(int(f.inv_freq.size()) * 2), max_pos_(max_pos), freqs_(f) {
  const int half = head_dim_ / 2;
  const double scale = f.attention_scale;
  cos_.resize(size_t(max_pos) * size_t(half));
  sin_.resize(cos_.size());
  for (int j = 0; j < half; ++j) {
    const double inv_freq = f.inv_freq[size_t(j)];  // float32, as the reference keeps it
    for (int p = 0; p < max_pos; ++p) {
      const double a = double(p) * inv_freq;
      cos_[size_t(p) * size_t(half) + size_t(j)] = float(std::cos(a) * scale);
      sin_[size_t(p) * size_t(half) + size_t(j)] = float(std::sin(a) * scale);
    }
  }
}

RopeTable::RopeTable(int head_dim, double theta, int max_pos)
    : RopeTable(rope_frequencies(head_dim, theta, RopeScaling{}, std::max(max_pos, 1), max_pos), max_pos) {}

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

void apply_rope_delta(float* x, int n_heads, const RopeTable& t, int delta) {
  constexpr int kMaxHalf = 512;
  const int half = t.head_dim() / 2;
  MH_CHECK(half <= kMaxHalf, "head_dim too large");
  float c[kMaxHalf], s[kMaxHalf];
  for (int j = 0; j < half; ++j) {
    const double a = double(delta) * double(t.freqs().inv_freq[size_t(j)]);
    c[j] = float(std::cos(a));
    s[j] = float(std::sin(a));
  }
  rotate(x, n_heads, t.head_dim(), c, s);
}

}  // namespace metharme::ops
