#include "cli/runtime_flags.h"

#include "cli/command.h"
#include "util/error.h"

namespace metharme::cli {

namespace {
kernels::WType kv_type_of(const std::string& s) {
  if (s == "f32") return kernels::WType::kF32;
  if (s == "f16") return kernels::WType::kF16;
  fail("--kv-type: unknown type '", s, "' (f32 or f16)");
}
void add_rope_flags(CLI::App& app, RuntimeFlags& f) {
  const auto scale_range = CLI::Range(1.0 / kMaxRopeFactor, 1.0 / kMinRopeFactor);
  auto* base = app.add_option("--rope-freq-base", f.rope_freq_base,
                              "RoPE base frequency (replaces the model's rope_theta; default: the model's, or "
                              "KoboldCpp's automatic base when the context exceeds the trained one)")
                   ->check(CLI::Range(1.0, 1e12));
  auto* scale = app.add_option("--rope-freq-scale", f.rope_freq_scale,
                               "RoPE position scale: positions times S, i.e. linear scaling by factor 1/S (or the "
                               "factor of the model's own scheme)")
                    ->check(scale_range);
  app.add_option("--ropeconfig", f.ropeconfig, "KoboldCpp's spelling: --ropeconfig SCALE [BASE]")
      ->expected(1, 2)
      ->excludes(base)
      ->excludes(scale);
}

}  // namespace

std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv) {
  auto f = std::make_shared<RuntimeFlags>();
  f->kv_type = default_kv;
  add_threads_option(app, f->threads);
  app.add_option("--kv-type,--kv", f->kv_type, "KV cache element type: f32 or f16")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16"}));
  add_rope_flags(app, *f);
  return f;
}

void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro) {
  (void)w;  // offload plans will read the model's config here
  ro.n_threads = f.threads;
  ro.kv_type = kv_type_of(f.kv_type);
  ro.rope.freq_base = f.rope_freq_base;
  ro.rope.freq_scale = f.rope_freq_scale;
  if (!f.ropeconfig.empty()) {
    const double s = f.ropeconfig[0];
    // KoboldCpp ignores a scale of 0 or less (automatic RoPE then); a base is its second value.
    if (s > 0 && !(s >= 1.0 / kMaxRopeFactor && s <= 1.0 / kMinRopeFactor))
      fail("--ropeconfig: scale ", s, " is out of range (", 1.0 / kMaxRopeFactor, " to ", 1.0 / kMinRopeFactor, ")");
    if (f.ropeconfig.size() > 1 && s > 0 && !(f.ropeconfig[1] >= 1 && f.ropeconfig[1] <= 1e12))
      fail("--ropeconfig: base ", f.ropeconfig[1], " is out of range (1 to 1e12)");
    if (s > 0) {
      ro.rope.freq_scale = s;
      if (f.ropeconfig.size() > 1) ro.rope.freq_base = f.ropeconfig[1];
    }
  }
  ro.rope.auto_ntk = true;  // applies only while no RoPE value is set
  ro.log_rope = true;
}

}  // namespace metharme::cli
