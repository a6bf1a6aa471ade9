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
}  // namespace

std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv) {
  auto f = std::make_shared<RuntimeFlags>();
  f->kv_type = default_kv;
  add_threads_option(app, f->threads);
  app.add_option("--kv-type,--kv", f->kv_type, "KV cache element type: f32 or f16")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16"}));
  return f;
}

void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro) {
  (void)w;  // RoPE scaling and offload plans will read the model's config here
  ro.n_threads = f.threads;
  ro.kv_type = kv_type_of(f.kv_type);
}

}  // namespace metharme::cli
