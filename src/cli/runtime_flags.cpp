#include "cli/runtime_flags.h"

#include "cli/command.h"
#include "util/error.h"

namespace metharme::cli {

namespace {
const char* const kKvHelp = "f32, f16, q8 (8-bit, fp16 scale per 32 values) or q4 (4-bit, likewise)";

kernels::KvType kv_type_of(const std::string& s, const char* flag) {
  kernels::KvType t;
  if (!kernels::parse_kv_type(s.c_str(), &t)) fail(flag, ": unknown KV type '", s, "' (f32, f16, q8 or q4)");
  return t;
}

CLI::Validator kv_type_check() {
  return CLI::Validator(
      [](std::string& s) {
        kernels::KvType t;
        return kernels::parse_kv_type(s.c_str(), &t) ? std::string() : "unknown KV type '" + s + "' (f32, f16, q8, q4)";
      },
      "f32|f16|q8|q4");
}
}  // namespace

std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv) {
  auto f = std::make_shared<RuntimeFlags>();
  f->kv_type = default_kv;
  add_threads_option(app, f->threads);
  auto* both = app.add_option("--kv-type,--kv", f->kv_type, std::string("KV cache type of keys and values: ") + kKvHelp)
                   ->capture_default_str()
                   ->check(kv_type_check());
  app.add_option("--kv-type-k,--cache-type-k", f->kv_type_k, "KV cache type of the keys (overrides --kv-type)")
      ->check(kv_type_check());
  app.add_option("--kv-type-v,--cache-type-v", f->kv_type_v, "KV cache type of the values (overrides --kv-type)")
      ->check(kv_type_check());
  app.add_option("--quantkv", f->quantkv, "KoboldCpp's spelling: 0 = f16, 1 = q8, 2 = q4 KV cache")
      ->check(CLI::Range(0, 2))
      ->excludes(both);
  return f;
}

namespace {
void resolve_kv(const RuntimeFlags& f, RuntimeOptions& ro) {
  static const char* const kQuantKv[] = {"f16", "q8", "q4"};
  const std::string both = f.quantkv >= 0 && f.quantkv <= 2 ? kQuantKv[f.quantkv] : f.kv_type;
  ro.kv_type_k = kv_type_of(f.kv_type_k.empty() ? both : f.kv_type_k, "--kv-type-k");
  ro.kv_type_v = kv_type_of(f.kv_type_v.empty() ? both : f.kv_type_v, "--kv-type-v");
}
}  // namespace

void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro) {
  (void)w;  // RoPE scaling and offload plans will read the model's config here
  ro.n_threads = f.threads;
  resolve_kv(f, ro);
}

std::string kv_types_label(const RuntimeFlags& f) {
  RuntimeOptions ro;
  resolve_kv(f, ro);
  return kv_types_label(ro);
}

std::string kv_types_label(const RuntimeOptions& ro) {
  if (ro.kv_type_k == ro.kv_type_v) return kernels::kv_type_name(ro.kv_type_k);
  return std::string("k=") + kernels::kv_type_name(ro.kv_type_k) + ",v=" + kernels::kv_type_name(ro.kv_type_v);
}

}  // namespace metharme::cli
