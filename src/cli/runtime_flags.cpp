#include "cli/runtime_flags.h"

#include <algorithm>
#include <string_view>

#include "cli/command.h"
#include "util/error.h"

namespace metharme::cli {

namespace {
kernels::WType kv_type_of(const std::string& s) {
  if (s == "f32") return kernels::WType::kF32;
  if (s == "f16") return kernels::WType::kF16;
  fail("--kv-type: unknown type '", s, "' (f32 or f16)");
}
void add_gpu_flags(CLI::App& app, RuntimeFlags& f) {
  app.add_option("--gpu-layers,--gpulayers", f.gpu_layers,
                 "Layers to run on the GPU (Vulkan), the last ones first; 'all' or more than the model's layer count "
                 "also moves the output head; 'auto' as many as fit the GPU's memory (alias -ngl)");
  app.add_option("--gpu-device", f.gpu_device, "Vulkan device to use (metharme info --gpu lists them)")
      ->check(CLI::Range(0, 64));
  f.usevulkan_opt =
      app.add_option("--usevulkan", f.usevulkan,
                     "KoboldCpp's spelling: use Vulkan device I (default 0); without --gpu-layers, offloads 'auto'")
          ->expected(0, 1)
          ->check(CLI::Range(0, 64));
}

// --gpu-layers value: a count (0 = none), "all" (everything, head included) or "auto".
void apply_gpu_layers(const RuntimeFlags& f, RuntimeOptions& ro) {
  std::string v = f.gpu_layers;
  if (v.empty() && f.usevulkan_opt && f.usevulkan_opt->count() > 0) v = "auto";
  ro.gpu_device = f.usevulkan.empty() ? f.gpu_device : f.usevulkan[0];
  if (v.empty()) return;
  if (v == "all") {
    ro.gpu_layers = kGpuAll;
  } else if (v == "auto") {
    ro.gpu_auto = true;
  } else {
    size_t used = 0;
    long n = -1;
    try {
      n = std::stol(v, &used);
    } catch (const std::exception&) {
    }
    if (used != v.size() || n < 0) fail("--gpu-layers: '", v, "' is not a layer count, 'all' or 'auto'");
    ro.gpu_layers = int(std::min<long>(n, kGpuAll));
  }
}

}  // namespace

void rewrite_runtime_aliases(int argc, char** argv) {
  static char gpu_layers[] = "--gpu-layers";
  for (int i = 1; i < argc; ++i)
    if (std::string_view(argv[i]) == "-ngl") argv[i] = gpu_layers;
}

std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv) {
  auto f = std::make_shared<RuntimeFlags>();
  f->kv_type = default_kv;
  add_threads_option(app, f->threads);
  app.add_option("--kv-type,--kv", f->kv_type, "KV cache element type: f32 or f16")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16"}));
  add_gpu_flags(app, *f);
  return f;
}

void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro) {
  (void)w;  // RoPE scaling will read the model's config here
  ro.n_threads = f.threads;
  ro.kv_type = kv_type_of(f.kv_type);
  apply_gpu_layers(f, ro);
}

}  // namespace metharme::cli
