// The RoPE a runtime uses: the model's own (config.json rope_scaling / GGUF keys), the command
// line's overrides, or KoboldCpp's automatic NTK-aware base when the context exceeds the trained
// one and no RoPE flag was given (README "Long context: RoPE scaling").
#pragma once

#include <string>

#include "formats/hf_config.h"
#include "ops/rope.h"

namespace metharme {

struct RopeOverrides {
  double freq_base = 0;   // > 0: replaces the model's rope_theta
  double freq_scale = 0;  // > 0: positions times this: factor 1/freq_scale of the model's scheme (linear if none)
  bool auto_ntk = false;  // KoboldCpp's automatic base (applies only when the two above are unset)
};

struct RopeChoice {
  double theta = 10000;
  RopeScaling scaling;
  ops::RopeFreqs freqs;  // for a cache of n_ctx positions
  std::string summary;   // one log line; empty when the model runs exactly as trained
};

RopeChoice choose_rope(const LlamaConfig& c, const RopeOverrides& o, int n_ctx);

// KoboldCpp's automatic base: unchanged up to the trained context (and up to 2048), beyond it
// base^(log10(n_ctx / 2pi) / log10(n_train / 2pi)).
double kobold_auto_rope_base(double base, int n_train, int n_ctx);

}  // namespace metharme
