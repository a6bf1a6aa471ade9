// Speculative decoding: a cheap drafter proposes the next few tokens, the target model evaluates
// them all in one forward pass, and Sampler::sample_draft() keeps each draft with the standard
// rejection rule, so the output has exactly the distribution of plain decoding.
//
// Prompt lookup copies the tokens that followed the latest earlier occurrence of the context's
// last n tokens: deterministic, its q is one-hot. A draft model (a smaller LLaMA with the same
// vocabulary) decodes in its own KV cache and samples each draft from its own distribution q,
// with the request's samplers applied to its logits as to the target's (begin()); the verifier
// needs that q (Drafter::q) for the rejection rule.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "chat/kv_context.h"
#include "model/llama.h"
#include "sampling/sampler.h"

namespace metharme {

struct SpecConfig {
  int draft_max = 0;                    // tokens drafted per step at most; 0: speculation off
  bool lookup = false;                  // prompt-lookup (n-gram) drafting from the context
  int ngram_min = 2;                    // shortest context suffix looked up
  int ngram_max = 4;                    // longest, tried first
  LlamaRuntime* draft_model = nullptr;  // draft model with one KV sequence per slot, or null
  bool enabled() const { return draft_max > 0 && (lookup || draft_model); }
};

// Acceptance figures: steps = verification passes, drafted/accepted = draft tokens.
struct SpecStats {
  int64_t steps = 0, drafted = 0, accepted = 0;
  double acceptance() const { return drafted ? double(accepted) / double(drafted) : 0; }
  // Tokens each verification pass produced: the accepted drafts plus the one sampled token.
  double tokens_per_step() const { return steps ? double(accepted + steps) / double(steps) : 0; }
  void add(const SpecStats& o) {
    steps += o.steps;
    drafted += o.drafted;
    accepted += o.accepted;
  }
};

// Prompt lookup: finds the latest earlier occurrence of the last n tokens of history (n from
// ngram_max down to ngram_min) and writes up to k of the tokens that followed it to out.
// Returns how many were written (0: no match).
int ngram_lookup(std::span<const int> history, int ngram_min, int ngram_max, int k, int* out);

class Drafter {
 public:
  explicit Drafter(const SpecConfig& cfg, int seq = 0);
  // A new output with these samplers (a request, a chat turn): the draft model's tokens are drawn
  // from them (without grammar or log-probabilities) with their own random stream derived from
  // p.seed. Before the first begin() the draft model drafts greedily (q one-hot).
  void begin(const SamplerParams& p, int eos_id);
  // Up to k tokens proposed to follow history (the whole context: prompt and output so far),
  // written to out; returns how many. Allocates nothing once warm.
  int draft(std::span<const int> history, int k, int* out);
  // The distribution draft j of the last draft() was drawn from (empty: one-hot).
  Sampler::DraftDist q(int j) const {
    return j >= 0 && size_t(j) < q_.size() ? Sampler::DraftDist(q_[size_t(j)]) : Sampler::DraftDist();
  }

 private:
  int draft_model(std::span<const int> history, int k, int* out);
  SpecConfig cfg_;
  std::unique_ptr<KvContext> ctx_;                     // the draft model's sequence `seq`, or null
  std::optional<Sampler> sampler_;                     // the request's samplers on the draft model's logits
  std::vector<int> hist_;                              // history and the drafts so far (the samplers' penalties)
  std::vector<std::vector<std::pair<int, float>>> q_;  // [draft_max] each draft's q
};

// Checks that a draft model can serve a target: the same vocabulary size and every token's
// text, BOS and EOS alike (tokenizers given as their piece lists). Throws Error naming the
// first difference.
void check_draft_vocab(int target_vocab, int draft_vocab, const std::vector<std::string>& target_pieces,
                       const std::vector<std::string>& draft_pieces);

}  // namespace metharme
