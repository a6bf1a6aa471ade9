#include "chat/speculative.h"

#include <algorithm>

#include "sampling/sampler.h"
#include "util/error.h"

namespace metharme {

int ngram_lookup(std::span<const int> history, int ngram_min, int ngram_max, int k, int* out) {
  const int n_hist = int(history.size());
  if (k <= 0) return 0;
  for (int n = std::min(ngram_max, n_hist - 1); n >= std::max(1, ngram_min); --n) {
    const int* tail = history.data() + (n_hist - n);
    // Latest start s < n_hist - n whose n tokens equal the tail; what follows it is the draft.
    for (int s = n_hist - n - 1; s >= 0; --s) {
      if (!std::equal(tail, tail + n, history.data() + s)) continue;
      const int from = s + n, m = std::min(k, n_hist - from);
      std::copy(history.data() + from, history.data() + from + m, out);
      return m;
    }
  }
  return 0;
}

Drafter::Drafter(const SpecConfig& cfg, int seq) : cfg_(cfg) {
  if (cfg.draft_model) ctx_ = std::make_unique<KvContext>(*cfg.draft_model, seq);
  q_.resize(size_t(std::max(0, cfg.draft_max)));
}

void Drafter::begin(const SamplerParams& p, int eos_id) {
  if (!ctx_) return;
  SamplerParams dp = p;
  dp.grammar = nullptr;  // the target's grammar rejects what it refuses; q need not know it
  dp.logprobs = SamplerParams::Logprobs::kOff;
  dp.top_logprobs = 0;
  dp.seed = p.seed ^ 0x9e3779b97f4a7c15ull;  // a stream apart from the target sampler's
  sampler_.reset();
  sampler_.emplace(dp, ctx_->runtime().n_vocab(), eos_id);
}

int Drafter::draft(std::span<const int> history, int k, int* out) {
  k = std::min(k, cfg_.draft_max);
  if (k <= 0 || history.empty()) return 0;
  for (int i = 0; i < k; ++i) q_[size_t(i)].clear();
  if (cfg_.lookup) {
    int n = ngram_lookup(history, cfg_.ngram_min, cfg_.ngram_max, k, out);
    if (n > 0 || !ctx_) return n;
  }
  return ctx_ ? draft_model(history, k, out) : 0;
}

int Drafter::draft_model(std::span<const int> history, int k, int* out) {
  // The draft cache follows the context: only what it does not hold yet (the tokens accepted
  // since the last draft) is evaluated, then k steps. When a chat's oldest turns scroll out it
  // shifts like the target's cache; drafts are only proposals, so that approximation costs
  // acceptance at most, never correctness.
  const int room = ctx_->runtime().n_ctx() - int(history.size());
  k = std::min(k, room);
  if (k <= 0) return 0;
  const float* logits = ctx_->sync(history, true);
  const int V = ctx_->runtime().n_vocab();
  if (sampler_) hist_.assign(history.begin(), history.end());
  for (int i = 0; i < k; ++i) {
    if (!sampler_) {
      out[i] = argmax(logits, V);
    } else {
      try {
        out[i] = sampler_->sample_dist(logits, hist_, q_[size_t(i)]);
      } catch (const SamplingError&) {
        return i;  // the draft model's row is unusable: fewer drafts, the target decides alone
      }
      hist_.push_back(out[i]);
    }
    if (i + 1 < k) logits = ctx_->append(out[i]);
  }
  return k;
}

void check_draft_vocab(int target_vocab, int draft_vocab, const std::vector<std::string>& target_pieces,
                       const std::vector<std::string>& draft_pieces) {
  if (target_vocab != draft_vocab)
    fail("--draft: the draft model has ", draft_vocab, " tokens but the target has ", target_vocab,
         ": speculative decoding needs the same tokenizer");
  if (target_pieces.size() != draft_pieces.size())
    fail("--draft: the draft tokenizer has ", draft_pieces.size(), " pieces but the target's has ",
         target_pieces.size(), ": speculative decoding needs the same tokenizer");
  for (size_t i = 0; i < target_pieces.size(); ++i)
    if (target_pieces[i] != draft_pieces[i])
      fail("--draft: token ", i, " is '", draft_pieces[i], "' in the draft tokenizer but '", target_pieces[i],
           "' in the target's: speculative decoding needs the same tokenizer");
}

}  // namespace metharme
