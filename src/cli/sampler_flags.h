// Sampler flags shared by `generate` and `chat` (KoboldAI names and semantics).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace metharme::cli {

struct SamplerFlags {
  SamplerParams params;  // defaults as given to add_sampler_flags
  std::string order = "6,0,1,3,4,2,5";
  std::vector<std::string> bans;    // token ids, each flag may hold a comma list
  std::vector<std::string> biases;  // "ID:BIAS"
  std::vector<std::string> stops;
  std::vector<std::string> dry_breakers = {"\n", ":", "\"", "*"};  // KoboldAI Lite's and SillyTavern's
  bool seed_set = false;

  // The parameters after parsing, validated against the vocabulary; the seed comes from the
  // clock unless --seed was given; n_ctx bounds the rep-pen and DRY windows. Throws Error
  // naming the bad flag.
  SamplerParams resolve(int n_vocab, const Tokenizer& tok, int n_ctx);
};

// Adds --temp, --top-k, --top-a, --top-p, --min-p, --typical, --tfs, --rep-pen,
// --rep-pen-range, --rep-pen-slope, --presence-penalty, --sampler-order, --ban, --ban-eos,
// --logit-bias, --stop, --seed and KoboldCpp's other samplers (--mirostat*, --dry-*, --xtc-*,
// --dynatemp-*, --smoothing-*, --nsigma) to `app`, with `defaults` as the values when a flag is
// absent.
std::shared_ptr<SamplerFlags> add_sampler_flags(CLI::App& app, const SamplerParams& defaults);

// KoboldAI Lite's defaults (temperature 0.7, top-k 100, top-p 0.92, rep-pen 1.07 over 360 tokens,
// slope 0.7): what `chat` starts from. `generate` starts from SamplerParams{} (temperature 0.8,
// every other sampler off), so `generate --temp 0` is the plain argmax.
SamplerParams kobold_lite_defaults();

}  // namespace metharme::cli
