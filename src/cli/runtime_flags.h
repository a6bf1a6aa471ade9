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
  // GPU offload (model/offload.h): "" (none), a layer count, "all" or "auto".
  std::string gpu_layers;
  int gpu_device = 0;
  std::vector<int> usevulkan;  // KoboldCpp's --usevulkan [I]: set (maybe empty) when given
  CLI::Option* usevulkan_opt = nullptr;
};

// KoboldCpp and llama.cpp users type -ngl, which CLI11 cannot declare (one-letter short names):
// rewrites it to --gpu-layers in argv before parsing.
void rewrite_runtime_aliases(int argc, char** argv);

// Registers the flags on `app`; `default_kv` is this command's KV type when none is given.
std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv);

// Fills the RuntimeOptions fields these flags own; n_ctx, n_seq and max_batch stay the caller's.
void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro);

}  // namespace metharme::cli
