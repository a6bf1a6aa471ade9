// metharme info: what a model folder holds, as the loader sees it.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cli/command.h"
#ifdef METHARME_HAVE_VULKAN
#include "gpu/device.h"
#endif
#include "kernels/q4.h"
#include "kernels/selftest.h"
#include "model/weights.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

// The AMX int4 product (an extra path of the int4 family, kernels/q4.h) where the CPU and OS have it.
int amx_self_test() {
  using namespace kernels;
  if (!amx_supported()) {
    std::printf("int4-amx: not used (no AMX-INT8, or the OS does not grant the tile state)\n");
    return 0;
  }
  KernelFamily& f = q4_amx_family();
  const FamilyReport r = run_self_test(f, Isa::kAvx512, simulated_mismatch(f, Isa::kAvx512));
  double worst = 0;
  for (const auto& c : r.checks) worst = std::max(worst, c.max_err);
  std::printf("%-7s %-12s %-6s %12.3g %7.0f us  %zu\n", r.family, "amx", r.pass ? "pass" : "FAIL", worst, r.micros,
              r.checks.size());
  if (!amx_enabled())
    std::printf("int4-amx: not used (METHARME_ISA=%s)\n",
                std::getenv("METHARME_ISA") ? std::getenv("METHARME_ISA") : "");
  else if (checked_isa(q4_family()) != Isa::kAvx512)
    std::printf("int4-amx: not used (int4 runs at %s)\n", isa_name(checked_isa(q4_family())));
  else if (q4_gemm_q8_amx())
    std::printf("int4-amx: using amx for products of %d rows or more\n", kQ4AmxMinRows);
  else
    std::printf("int4-amx: not used (self-test failed)\n");
  return r.pass ? 0 : 1;
}

// Every kernel family at every ISA this CPU has, against the scalar kernels; 1 if any fails.
int self_test() {
  using namespace kernels;
  const char* cap = std::getenv("METHARME_ISA");
  std::printf("cpu: %s; in use: %s%s%s\n", isa_name(detect_isa()), isa_name(active_isa()),
              cap && *cap ? " (METHARME_ISA=" : "", cap && *cap ? (std::string(cap) + ")").c_str() : "");
  std::printf("%-7s %-12s %-6s %12s %10s  %s\n", "family", "isa", "result", "max error", "time", "kernels checked");
  int failed = 0;
  for (KernelFamily* f : kernel_families()) {
    for (int i = int(Isa::kAvx2); i <= int(detect_isa()); ++i) {
      const Isa isa = Isa(i);
      const FamilyReport r = run_self_test(*f, isa, simulated_mismatch(*f, isa));
      double worst = 0;
      std::string bad;
      for (const auto& c : r.checks) {
        worst = std::max(worst, c.max_err);
        if (!c.pass) bad += (bad.empty() ? "" : ", ") + c.kernel;
      }
      std::printf("%-7s %-12s %-6s %12.3g %7.0f us  %zu%s%s\n", r.family, isa_name(isa), r.pass ? "pass" : "FAIL",
                  worst, r.micros, r.checks.size(), bad.empty() ? "" : "; failed: ", bad.c_str());
      failed += r.pass ? 0 : 1;
    }
    std::printf("%s: using %s\n", f->name, isa_name(checked_isa(*f)));
  }
  failed += amx_self_test();
  if (detect_isa() == Isa::kScalar) std::printf("(this CPU has no AVX2: only the scalar kernels run)\n");
  return failed ? 1 : 0;
}

// The Vulkan devices this process can use (or why none), as --gpu-device numbers them.
void list_gpus() {
#ifdef METHARME_HAVE_VULKAN
  std::string why;
  auto devs = gpu::list_devices(&why);
  if (devs.empty()) {
    std::printf("vulkan: no device (%s)\n", why.c_str());
    return;
  }
  for (const auto& d : devs) {
    std::printf("vulkan %d: %s (%s, Vulkan %s), subgroup %u, max buffer %.0f MiB%s\n", d.index, d.name.c_str(),
                d.type.c_str(), d.api.c_str(), d.subgroup_size, double(d.max_buffer_bytes) / (1 << 20),
                d.usable ? "" : ", no compute queue");
    for (size_t h = 0; h < d.device_local_heaps.size(); ++h)
      std::printf("  device-local heap %zu: %.0f MiB\n", h, double(d.device_local_heaps[h]) / (1 << 20));
    std::printf("  subgroup operations (compute): %s\n", gpu::subgroup_ops_names(d.subgroup_ops).c_str());
    std::printf("  subgroup matmul shaders: %s\n",
                !d.subgroup_shaders  ? ("not used, " + d.subgroup_note).c_str()
                : d.subgroup_prefill ? "used (prefill: q4_prefill_sg, i8_prefill_sg)"
                                     : "used (decode builds only: prefill needs shuffle and 8+ lanes)");
    std::printf("  VK_KHR_cooperative_matrix: %s\n",
                d.coop_matrix ? "offered (unused: this build's glslc cannot compile GL_KHR_cooperative_matrix)" : "no");
  }
  std::printf("vulkan features used: %s\n", gpu::features_used());
#else
  std::printf("vulkan: this build has no GPU support (configure with -DMETHARME_VULKAN=ON)\n");
#endif
}

Registrar reg("info", "Load a model folder and print its configuration, weight format and sizes", [](CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto selftest = std::make_shared<bool>(false);
  auto gpus = std::make_shared<bool>(false);
  app.add_option("-m,--model", *dir, "Model folder");
  app.add_flag("--self-test", *selftest,
               "Run every optimized kernel family at every ISA this CPU has against the scalar kernels and print "
               "the results (with or without -m)");
  app.add_flag("--gpu", *gpus,
               "List the Vulkan devices (--gpu-device numbers) with memory, subgroup size and operations");
  return [dir, selftest, gpus] {
    int rc = 0;
    if (*gpus) {
      list_gpus();
      if (dir->empty() && !*selftest) return 0;
      std::printf("\n");
    }
    if (*selftest) {
      rc = self_test();
      if (dir->empty()) return rc;
      std::printf("\n");
    }
    if (dir->empty()) fail("info: --model (-m) is required (or --self-test, --gpu)");
    auto w = load_weights(*dir);
    const LlamaConfig& c = w->config;
    std::printf("model:        %s\n", dir->c_str());
    const size_t n_tensors = w->file_tensors ? w->file_tensors : w->store.size();
    std::printf("files:        %zu (%zu tensors)\n", w->store.files().size(), n_tensors);
    std::printf("layers:       %d\n", c.num_hidden_layers);
    std::printf("hidden:       %d (ffn %d)\n", c.hidden_size, c.intermediate_size);
    std::printf("heads:        %d (kv %d, head_dim %d)\n", c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    std::printf("vocab:        %d\n", c.vocab_size);
    std::printf("context:      %d (rope_theta %g, rms_norm_eps %g)\n", c.max_position_embeddings, c.rope_theta,
                c.rms_norm_eps);
    if (c.rope_scaling.kind != RopeKind::kNone)
      std::printf("rope scaling: %s x%g (original context %d)\n", rope_kind_name(c.rope_scaling.kind),
                  c.rope_scaling.factor,
                  c.rope_scaling.original_max_positions > 0 ? c.rope_scaling.original_max_positions
                                                            : c.max_position_embeddings);
    std::printf("embeddings:   %s%s\n", dtype_name(w->embed.dtype), c.tie_word_embeddings ? " (tied lm_head)" : "");
    std::printf("linears:      %s, %.1f MiB\n", w->format.c_str(), double(w->linear_bytes()) / (1 << 20));
    std::printf("lm_head:      %s, %.1f MiB\n", w->lm_head.describe().c_str(),
                double(w->lm_head.weight_bytes()) / (1 << 20));
    std::printf("read/token:   %.1f MiB\n", double(w->bytes_per_token()) / (1 << 20));
    return rc;
  };
});

}  // namespace
}  // namespace metharme::cli
