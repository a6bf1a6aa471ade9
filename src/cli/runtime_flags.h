// Flags shared by every command that runs a model (generate, chat, perplexity, serve, bench):
// worker threads and the KV cache types today; RoPE scaling, speculative drafting and GPU offload
// belong here too, so every command spells them alike.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "chat/speculative.h"
#include "model/llama.h"
#include "tokenizer/tokenizer.h"

namespace metharme::cli {

struct RuntimeFlags {
  int threads = 0;                   // 0 = the CPUs this process may use
  std::string kv_type;               // KV cache element type of keys and values: f32 | f16 | q8 | q4
  std::string kv_type_k, kv_type_v;  // per-part overrides; empty = kv_type
  int quantkv = -1;                  // KoboldCpp's --quantkv 0|1|2 (f16|q8|q4); -1 = not given
  // Speculative decoding (README "Speculative decoding").
  std::string draft;                 // --draft DIR: draft model folder ("" none)
  bool lookup = false;               // --lookup: prompt-lookup drafting
  int draft_max = 8;                 // --draft-max
  int ngram_min = 2, ngram_max = 4;  // --lookup-ngram-min/-max
  // RoPE (README "Long context: RoPE scaling"); 0 = unset. --ropeconfig S [B] fills both.
  double rope_freq_base = 0, rope_freq_scale = 0;
  std::vector<double> ropeconfig;
  // GPU offload (model/offload.h): "" (none), a layer count, "all" or "auto".
  std::string gpu_layers;
  int gpu_device = 0;
  std::vector<int> usevulkan;  // KoboldCpp's --usevulkan [I]: set (maybe empty) when given
  CLI::Option* usevulkan_opt = nullptr;
};

// The drafting set up from the flags: the draft model (if any) with its own runtime, and the
// SpecConfig that points at it. cfg.enabled() is false when no drafting was asked for.
struct SpecSetup {
  std::unique_ptr<ModelWeights> weights;
  std::unique_ptr<LlamaRuntime> runtime;
  SpecConfig cfg;
};

// KoboldCpp and llama.cpp users type -ngl, which CLI11 cannot declare (one-letter short names):
// rewrites it to --gpu-layers in argv before parsing.
void rewrite_runtime_aliases(int argc, char** argv);

// Registers the flags on `app`; `default_kv` is this command's KV type when none is given.
std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv);

// The speculative-decoding flags (--draft, --lookup, --draft-max, --lookup-ngram-min/-max), for
// the commands that generate: generate, chat, serve.
void add_speculative_flags(CLI::App& app, RuntimeFlags& f);

// Fills the RuntimeOptions fields these flags own; n_ctx, n_seq and max_batch stay the caller's.
void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro);

// Loads --draft (refusing a vocabulary other than tok's) with n_seq sequences of target's
// context size and the target's threads and KV type; describes the drafting on stderr.
std::unique_ptr<SpecSetup> setup_speculation(const RuntimeFlags& f, const Tokenizer& tok, const LlamaRuntime& target,
                                             const RuntimeOptions& target_opt);

// "q8" when keys and values share a type, else "k=q8,v=f16" (reports and logs).
std::string kv_types_label(const RuntimeOptions& ro);
std::string kv_types_label(const RuntimeFlags& f);

}  // namespace metharme::cli
