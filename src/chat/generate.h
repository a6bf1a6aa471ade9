// The plain generation loop: prefill a prompt, then sample and stream tokens.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "model/llama.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace metharme {

struct GenerateOptions {
  int max_tokens = 128;
  bool stop_at_eos = true;
  SamplerParams sampler;
};

struct GenerateResult {
  std::vector<int> tokens;  // generated ids (EOS not included)
  std::string text;
  int prompt_tokens = 0;
  double prompt_seconds = 0, gen_seconds = 0;
  bool hit_eos = false;
};

// Streams text pieces to on_text as they become printable; returning false from it stops early.
GenerateResult generate(LlamaRuntime& rt, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const std::function<bool(const std::string&)>& on_text);

}  // namespace metharme
