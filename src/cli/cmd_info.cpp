// metharme info: what a model folder holds, as the loader sees it.
#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "cli/command.h"
#include "kernels/selftest.h"
#include "model/weights.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

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
  if (detect_isa() == Isa::kScalar) std::printf("(this CPU has no AVX2: only the scalar kernels run)\n");
  return failed ? 1 : 0;
}

Registrar reg("info", "Load a model folder and print its configuration, weight format and sizes", [](CLI::App& app) {
  auto dir = std::make_shared<std::string>();
  auto selftest = std::make_shared<bool>(false);
  app.add_option("-m,--model", *dir, "Model folder");
  app.add_flag("--self-test", *selftest,
               "Run every optimized kernel family at every ISA this CPU has against the scalar kernels and print "
               "the results (with or without -m)");
  return [dir, selftest] {
    int rc = 0;
    if (*selftest) {
      rc = self_test();
      if (dir->empty()) return rc;
      std::printf("\n");
    }
    if (dir->empty()) fail("info: --model (-m) is required (or --self-test)");
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
