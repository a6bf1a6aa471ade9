// How a model stretches its rotary position embedding past the context it was trained on: the
// plain data of config.json's `rope_scaling` or GGUF's llama.rope.scaling.* keys. formats/ fills
// it, ops/rope.h turns it into frequencies; it lives here because both layers read it.
#pragma once

namespace metharme {

// The schemes of Hugging Face transformers' rope init functions (README "Long context").
enum class RopeKind { kNone, kLinear, kDynamic, kYarn, kLlama3 };

inline const char* rope_kind_name(RopeKind k) {
  switch (k) {
    case RopeKind::kLinear:
      return "linear";
    case RopeKind::kDynamic:
      return "dynamic";
    case RopeKind::kYarn:
      return "yarn";
    case RopeKind::kLlama3:
      return "llama3";
    case RopeKind::kNone:
      break;
  }
  return "none";
}

struct RopeScaling {
  RopeKind kind = RopeKind::kNone;
  double factor = 1;               // context extension; linear: positions are divided by it
  int original_max_positions = 0;  // the trained context it extends; 0 = max_position_embeddings
  // yarn
  double beta_fast = 32, beta_slow = 1;   // rotation counts that bound the interpolation ramp
  double attention_factor = 0;            // multiplies cos and sin; 0 = derived from factor / mscale
  double mscale = 0, mscale_all_dim = 0;  // DeepSeek-style derivation of attention_factor (0 = unset)
  bool truncate = true;                   // ramp bounds rounded out to whole dimensions
  // llama3
  double low_freq_factor = 1, high_freq_factor = 4;
};

}  // namespace metharme
