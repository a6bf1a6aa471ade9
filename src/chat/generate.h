// The generation loop: bring the cache to the prompt, then sample and stream tokens until EOS,
// a stop string, the token limit, the end of the context, or the caller says stop.
#pragma once

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "chat/kv_context.h"
#include "chat/speculative.h"
#include "grammar/matcher.h"
#include "model/llama.h"
#include "sampling/sampler.h"
#include "tokenizer/tokenizer.h"

namespace metharme {

struct GenerateOptions {
  int max_tokens = 128;
  bool stop_at_eos = true;  // false: EOS is an ordinary token (shown as nothing)
  SamplerParams sampler;
  std::vector<std::string> stop;  // stop strings, matched on the decoded text
  bool trim_stop = true;          // the text ends before the stop string (false: after it)
  bool context_shift = true;      // reuse a cache whose front was dropped (see KvContext)
  const std::atomic<bool>* abort = nullptr;  // checked before every token: true stops (kAborted)
  // Speculative decoding: drafts verified in one forward pass each (null: plain decoding). The
  // output's distribution is unchanged; greedy output is the same token for token.
  Drafter* drafter = nullptr;
  int draft_max = 8;  // drafts per verification pass at most
};

enum class FinishReason { kLength, kEos, kStop, kAborted, kContextFull };
const char* finish_reason_name(FinishReason r);  // "length", "eos", "stop", "aborted", "context"

struct GenerateResult {
  std::vector<int> tokens;  // generated ids (EOS not included)
  std::string text;         // what was streamed: the decoded tokens, cut at a stop string
  FinishReason finish = FinishReason::kLength;
  int prompt_tokens = 0;
  int prompt_reused = 0;    // prompt tokens taken from the cache instead of evaluated
  double prompt_seconds = 0, gen_seconds = 0;
  bool hit_eos = false;
  SpecStats spec;  // speculation figures (all zero without a drafter)
};

// on_text receives text as it becomes showable (whole UTF-8 characters, no stop-string
// prefixes); returning false stops generation (FinishReason::kAborted).
using TextSink = std::function<bool(const std::string&)>;

// The text each token adds to an output, for grammar matching: piece text (U+2581 as space),
// the raw byte of a byte piece, nothing for control and unknown tokens; n_vocab entries.
std::vector<std::string> grammar_token_texts(const Tokenizer& tok, int n_vocab);

// Generates after prompt_ids in ctx's sequence, reusing what the cache already holds.
GenerateResult generate(KvContext& ctx, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const TextSink& on_text);

// The same from an empty cache in sequence 0.
GenerateResult generate(LlamaRuntime& rt, const Tokenizer& tok, const std::vector<int>& prompt_ids,
                        const GenerateOptions& opt, const TextSink& on_text);

}  // namespace metharme
