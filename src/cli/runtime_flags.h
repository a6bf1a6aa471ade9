// Flags shared by every command that runs a model (generate, chat, perplexity, serve, bench):
// worker threads and the KV cache type today; RoPE scaling, speculative drafting and GPU offload
// belong here too, so every command spells them alike.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "model/llama.h"

namespace metharme::cli {

struct RuntimeFlags {
  int threads = 0;      // 0 = the CPUs this process may use
  std::string kv_type;  // KV cache element type: f32 | f16
  // RoPE (README "Long context: RoPE scaling"); 0 = unset. --ropeconfig S [B] fills both.
  double rope_freq_base = 0, rope_freq_scale = 0;
  std::vector<double> ropeconfig;
};

// Registers the flags on `app`; `default_kv` is this command's KV type when none is given.
std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv);

// Fills the RuntimeOptions fields these flags own; n_ctx, n_seq and max_batch stay the caller's.
void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro);

}  // namespace metharme::cli
