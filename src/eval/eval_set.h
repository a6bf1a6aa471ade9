// The token windows a perplexity protocol scores, built from a corpus.
//
// gptq (GPTQ-for-LLaMa's llama_eval): the evaluation text is tokenized in one call with one BOS at
// its start, cut into non-overlapping windows of seqlen tokens (the tail is dropped), each window
// evaluated from an empty cache; the loss of a window is the mean cross-entropy of its seqlen-1
// next-token predictions and ppl = exp(mean window loss). c4 instead concatenates 256 randomly
// drawn windows of separately tokenized documents (corpus.h).
//
// llamacpp (llama.cpp's perplexity tool): the file text (as is) tokenized with BOS, cut into chunks
// of ctx tokens, the first token of every chunk replaced by BOS, and only the predictions of the
// second half scored (logits rows ctx/2 .. ctx-2); ppl = exp(mean over all scored tokens).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "eval/corpus.h"
#include "tokenizer/tokenizer.h"

namespace metharme::eval {

enum class Protocol { kGptq, kLlamaCpp };
Protocol parse_protocol(const std::string& name);  // "gptq", "llamacpp"
const char* protocol_name(Protocol p);

struct EvalSet {
  Dataset dataset = Dataset::kText;
  Protocol protocol = Protocol::kGptq;
  std::string source;      // data file
  std::string format;      // how the file was read
  std::string text_rule;   // how the evaluated tokens were formed, for reports
  int window = 0;          // tokens per window: seqlen (gptq) or ctx (llamacpp)
  int first_scored = 0;    // first logits row scored in a window (0 or ctx/2); rows up to window-2 are scored
  bool bos_each_window = false;  // the first token of every window is replaced by BOS
  int bos_id = 1;
  std::vector<int32_t> tokens;   // [n_windows][window]
  int64_t corpus_tokens = 0;     // tokens before cutting into windows (c4: of the sampled windows)
  int64_t windows_available = 0; // windows the corpus holds (before --limit)

  int n_windows() const { return window > 0 ? int(tokens.size() / size_t(window)) : 0; }
  int scored_per_window() const { return window - 1 - first_scored; }
  // Token at position `pos` of window `w` as the model sees it (BOS substitution applied).
  int32_t token(int w, int pos) const {
    if (pos == 0 && bos_each_window) return bos_id;
    return tokens[size_t(w) * size_t(window) + size_t(pos)];
  }
};

struct EvalSetOptions {
  Protocol protocol = Protocol::kGptq;
  int window = 2048;  // --seqlen or --ctx
  int limit = 0;      // keep at most this many windows; 0 = all
};

// Tokenizes `corpus` as the protocol prescribes. Errors (with the file named) when it holds fewer
// tokens than one window.
EvalSet build_eval_set(const Corpus& corpus, Dataset dataset, const Tokenizer& tok, const EvalSetOptions& opt);

// Windows from ready token ids (one BOS already in front where wanted): the gptq cutting rule.
EvalSet eval_set_from_ids(std::vector<int32_t> ids, Protocol protocol, int window, int bos_id, int limit = 0);

}  // namespace metharme::eval
