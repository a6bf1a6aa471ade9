// Flags shared by every command that runs a model (generate, chat, perplexity, serve, bench):
// worker threads and the KV cache types today; RoPE scaling, speculative drafting and GPU offload
// belong here too, so every command spells them alike.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "model/llama.h"

namespace metharme::cli {

struct RuntimeFlags {
  int threads = 0;                   // 0 = the CPUs this process may use
  std::string kv_type;               // KV cache element type of keys and values: f32 | f16 | q8 | q4
  std::string kv_type_k, kv_type_v;  // per-part overrides; empty = kv_type
  int quantkv = -1;                  // KoboldCpp's --quantkv 0|1|2 (f16|q8|q4); -1 = not given
};

// Registers the flags on `app`; `default_kv` is this command's KV type when none is given.
std::shared_ptr<RuntimeFlags> add_runtime_flags(CLI::App& app, const std::string& default_kv);

// Fills the RuntimeOptions fields these flags own; n_ctx, n_seq and max_batch stay the caller's.
void apply_runtime_flags(const RuntimeFlags& f, const ModelWeights& w, RuntimeOptions& ro);

// "q8" when keys and values share a type, else "k=q8,v=f16" (reports and logs).
std::string kv_types_label(const RuntimeOptions& ro);
std::string kv_types_label(const RuntimeFlags& f);

}  // namespace metharme::cli
