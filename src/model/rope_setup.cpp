#include "model/rope_setup.h"

#include <cmath>
#include <numbers>

#include "util/error.h"

namespace metharme {

double kobold_auto_rope_base(double base, int n_train, int n_ctx) {
  const double two_pi = 2 * std::numbers::pi;
  if (n_ctx <= n_train || n_ctx <= 2048 || n_train <= 7) return base;  // n_train <= 2pi has no log
  return std::pow(base, std::log10(n_ctx / two_pi) / std::log10(n_train / two_pi));
}

namespace {

std::string describe(const RopeScaling& s, const ops::RopeFreqs& f, int trained) {
  std::string d = cat(rope_kind_name(s.kind), " x", s.factor);
  if (s.kind == RopeKind::kYarn || s.kind == RopeKind::kLlama3)
    d += cat(" (original context ", s.original_max_positions > 0 ? s.original_max_positions : trained,
             s.kind == RopeKind::kYarn ? cat(", attention factor ", f.attention_scale) : std::string(), ")");
  return d;
}

}  // namespace

RopeChoice choose_rope(const LlamaConfig& c, const RopeOverrides& o, int n_ctx) {
  RopeChoice r;
  r.theta = c.rope_theta;
  r.scaling = c.rope_scaling;
  const int trained = c.max_position_embeddings;
  const bool from_model = r.scaling.kind != RopeKind::kNone;
  std::string how;
  if (o.freq_base > 0 || o.freq_scale > 0) {
    if (o.freq_base > 0) r.theta = o.freq_base;
    if (o.freq_scale > 0) {
      if (r.scaling.kind == RopeKind::kNone) r.scaling.kind = RopeKind::kLinear;
      r.scaling.factor = 1.0 / o.freq_scale;
    }
    how = "from the command line";
  } else if (from_model) {
    how = "from the model";
  } else if (o.auto_ntk && (r.theta == 10000 || r.theta == 500000) && n_ctx > trained) {
    r.theta = kobold_auto_rope_base(r.theta, trained, n_ctx);
    if (r.theta != c.rope_theta)
      how = cat("automatic NTK-aware base ", c.rope_theta, " -> ", r.theta, " (KoboldCpp's rule)");
  }
  r.freqs = ops::rope_frequencies(c.head_dim, r.theta, r.scaling, trained, n_ctx);
  const bool plain = r.scaling.kind == RopeKind::kNone && r.theta == c.rope_theta;
  if (plain && n_ctx > trained)
    r.summary = cat("rope: warning: context ", n_ctx, " is beyond the trained ", trained,
                    " and no RoPE scaling applies (base ", r.theta, "); set --rope-freq-base or --rope-freq-scale");
  else if (!how.empty() && r.scaling.kind == RopeKind::kNone)
    r.summary =
        cat("rope: base ", r.theta, ", no position scaling, ", how, "; context ", n_ctx, " (trained ", trained, ")");
  else if (!how.empty())
    r.summary = cat("rope: ", describe(r.scaling, r.freqs, trained), ", base ", r.theta, ", ", how, "; context ", n_ctx,
                    " (trained ", trained, ")");
  return r;
}

}  // namespace metharme
