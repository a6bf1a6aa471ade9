#include "cli/runtime_flags.h"

#include <cstdio>
#include <algorithm>
#include <string_view>

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
  add_rope_flags(app, *f);
  add_gpu_flags(app, *f);
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
  (void)w;  // the model's own RoPE scheme is read by the runtime
  ro.n_threads = f.threads;
  resolve_kv(f, ro);
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
  apply_gpu_layers(f, ro);
}

void add_speculative_flags(CLI::App& app, RuntimeFlags& f) {
  app.add_option("--draft,--model-draft", f.draft,
                 "Speculative decoding with this draft model folder (a smaller LLaMA, same tokenizer)");
  app.add_flag("--lookup", f.lookup, "Speculative decoding with prompt-lookup drafts (n-grams of the context)");
  app.add_option("--draft-max", f.draft_max, "Draft tokens verified per step at most (0: speculation off)")
      ->capture_default_str()
      ->check(CLI::Range(0, 32));
  app.add_option("--lookup-ngram-min", f.ngram_min, "Shortest context suffix prompt lookup matches")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
  app.add_option("--lookup-ngram-max", f.ngram_max, "Longest context suffix prompt lookup matches (tried first)")
      ->capture_default_str()
      ->check(CLI::Range(1, 16));
}

std::unique_ptr<SpecSetup> setup_speculation(const RuntimeFlags& f, const Tokenizer& tok, const LlamaRuntime& target,
                                             const RuntimeOptions& target_opt) {
  auto s = std::make_unique<SpecSetup>();
  if (f.ngram_min > f.ngram_max)
    fail("--lookup-ngram-min (", f.ngram_min, ") is larger than --lookup-ngram-max (", f.ngram_max, ")");
  s->cfg.lookup = f.lookup;
  s->cfg.ngram_min = f.ngram_min;
  s->cfg.ngram_max = f.ngram_max;
  if (!f.draft.empty() && f.draft_max > 0) {
    s->weights = load_weights(f.draft);
    Tokenizer dtok = Tokenizer::from_folder(f.draft);
    std::vector<std::string> a, b;
    for (int i = 0; i < tok.vocab_size(); ++i) a.push_back(tok.piece(i));
    for (int i = 0; i < dtok.vocab_size(); ++i) b.push_back(dtok.piece(i));
    check_draft_vocab(target.n_vocab(), s->weights->config.vocab_size, a, b);
    RuntimeOptions ro = target_opt;
    ro.n_ctx = target.n_ctx();
    ro.max_batch = std::max(ro.max_batch, 64);
    ro.gpu_layers = 0;  // the draft model runs on the CPU
    ro.gpu_auto = false;
    s->runtime = std::make_unique<LlamaRuntime>(*s->weights, ro);
    s->cfg.draft_model = s->runtime.get();
  }
  s->cfg.draft_max = f.draft_max;
  if (s->cfg.enabled())
    std::fprintf(stderr, "speculative decoding: %s%s%s, up to %d drafts per step\n", f.lookup ? "prompt lookup" : "",
                 f.lookup && s->cfg.draft_model ? " then " : "",
                 s->cfg.draft_model ? ("draft model " + f.draft).c_str() : "", f.draft_max);
  return s;
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
