// Turning logits into the next token: KoboldAI's samplers, applied in a configurable order.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "grammar/matcher.h"
#include "sampling/dry.h"
#include "sampling/samplers.h"
#include "util/error.h"

namespace metharme {

// KoboldAI sampler settings (../shared/docs/kobold-api.md section 3). Each sampler is off at its
// neutral value. sampler_order ids: 0 top-k, 1 top-a, 2 top-p (then min-p), 3 tail-free,
// 4 typical, 5 temperature, 6 repetition penalty.
struct SamplerParams {
  float temperature = 0.8f;       // <= 0: greedy (only the most likely token survives slot 5)
  int top_k = 0;                  // 0: off
  float top_a = 0.0f;             // 0: off
  float top_p = 1.0f;             // 1: off
  float min_p = 0.0f;             // 0: off (KoboldCpp extension, applied right after top-p)
  float typical = 1.0f;           // 1: off
  float tfs = 1.0f;               // 1: off
  float rep_pen = 1.0f;           // 1: off
  int rep_pen_range = 320;        // tokens of context penalized; below 1 counts as 1 (KoboldCpp)
  float rep_pen_slope = 1.0f;     // KoboldCpp: the older half of the window gets 1 + (rep_pen-1)*slope
  float presence_penalty = 0.0f;  // subtracted from every token seen in the window
  std::vector<int> sampler_order{6, 0, 1, 3, 4, 2, 5};
  std::vector<int> banned_tokens;                 // never sampled
  bool ban_eos = false;                           // EOS never sampled
  std::vector<std::pair<int, float>> logit_bias;  // {token id, added to its logit}
  uint64_t seed = 0;
  // The request's context size (KoboldCpp's max_context_length): bounds the rep-pen and DRY
  // windows. 0: no bound.
  int n_ctx = 0;
  // KoboldCpp's samplers outside sampler_order; each is off at the value shown. Defaults and
  // pipeline positions: README "Samplers".
  int mirostat = 0;  // 1 or 2: rep-pen, temperature, Mirostat; sampler_order and XTC unused
  float mirostat_tau = 5.0f, mirostat_eta = 0.1f;
  float dry_multiplier = 0.0f;  // DRY: 0 off
  float dry_base = 1.75f;
  int dry_allowed_length = 2;
  int dry_penalty_last_n = 320;                           // <= 0: the whole context
  std::vector<std::vector<int>> dry_breakers;             // dry_breaker_sequences() of the strings
  float xtc_threshold = 0.2f, xtc_probability = 0.0f;     // XTC: probability 0 off
  float dynatemp_range = 0.0f, dynatemp_exponent = 1.0f;  // dynamic temperature: range 0 off
  float smoothing_factor = 0.0f, smoothing_curve = 1.0f;  // smoothing: factor 0 off
  float nsigma = 0.0f;                                    // top-n-sigma: 0 off

  // Grammar constraint: only tokens that keep the output a prefix of a match are drawn, and EOS
  // only where the output is a whole match. Needs the vocabulary's TokenTable (Sampler ctor).
  std::shared_ptr<const grammar::Grammar> grammar;
  // Log-probabilities recorded per drawn token (Sampler::last_logprobs).
  enum class Logprobs { kOff, kModel, kSampled };
  Logprobs logprobs = Logprobs::kOff;  // kModel: log-softmax of the logits (OpenAI); kSampled: the
                                       // distribution the token was drawn from (KoboldCpp)
  int top_logprobs = 0;                // alternatives recorded per token (at most kMaxTopLogprobs)
};

constexpr int kMaxTopLogprobs = 20;

// One drawn token's log-probability and the most likely alternatives, most likely first.
struct StepLogprobs {
  int token = -1;
  float logprob = 0;
  std::vector<std::pair<int, float>> top;  // {token id, log-probability}
};

// Thrown by Sampler::sample() when no token can be drawn. model_fault(): the logits themselves
// are broken (NaN, +inf, or all -inf); otherwise the request's bans removed every token.
class SamplingError : public Error {
 public:
  SamplingError(const std::string& msg, bool model_fault) : Error(msg), model_fault_(model_fault) {}
  bool model_fault() const { return model_fault_; }

 private:
  bool model_fault_;
};

constexpr int kSamplerCount = 7;
// Before the samplers run, only this many of the most likely tokens stay candidates, as in
// KoboldCpp; it bounds the cost of the samplers that sort (top-p, tail-free, typical).
constexpr size_t kMaxCandidates = 5000;
const char* sampler_name(int id);  // "top_k", ... "rep_pen"

// "" when p is usable with a vocabulary of n_vocab tokens, else a one-line message naming the
// field. A 6-entry sampler_order without 6 is valid (normalize_order() prepends 6, as United does).
std::string sampler_params_error(const SamplerParams& p, int n_vocab);
// "" unless the bans (banned_tokens, and EOS when ban_eos) leave no token of the vocabulary that
// could be sampled; then a one-line message saying so.
std::string sampler_bans_error(const SamplerParams& p, int n_vocab, int eos_id);
// The order actually applied: the list, with 6 prepended when it holds 0..5 only.
std::vector<int> normalize_order(const std::vector<int>& order);
// Parses "6,0,1,3,4,2,5" (commas or spaces); throws Error on anything else.
std::vector<int> parse_sampler_order(const std::string& s);

class Sampler {
 public:
  // Throws Error when the params are invalid (see sampler_params_error), or when they hold a
  // grammar and `tokens` (the vocabulary's texts for the grammar) is null.
  Sampler(const SamplerParams& p, int n_vocab, int eos_id = 2, const grammar::TokenTable* tokens = nullptr);

  // Picks the next token from logits[n_vocab]. `history`: every token of the context so far
  // (prompt and generated) for the repetition penalty. Allocates nothing.
  int sample(const float* logits, const std::vector<int>& history);

  // A draft token's distribution: {id, probability} of every token the drafter could have
  // proposed. Empty: one-hot on the draft (a deterministic drafter such as prompt lookup).
  using DraftDist = std::span<const std::pair<int, float>>;

  // Speculative verification of `draft`, drawn by a drafter from q. With p the distribution
  // sample() would draw from here, the draft is kept with probability min(1, p(draft)/q(draft));
  // otherwise the token is drawn from norm(max(p - q, 0)), which never holds the draft. The result
  // is distributed exactly as sample()'s and the sampler's state (Mirostat, grammar,
  // log-probabilities) follows it the same way; a greedy p keeps the draft iff it is the most
  // likely token and uses no randomness. draft < 0: sample().
  int sample_draft(const float* logits, const std::vector<int>& history, int draft, DraftDist q = {});

  // sample() for a drafter: also writes the distribution the token was drawn from to q (the
  // survivors with probability above 0). q keeps its capacity between calls.
  int sample_dist(const float* logits, const std::vector<int>& history, std::vector<std::pair<int, float>>& q);

  // The distribution sample() draws from: surviving {id, probability}, most likely first.
  std::vector<std::pair<int, double>> distribution(const float* logits, const std::vector<int>& history);

  void reseed(uint64_t seed) { rng_.seed(seed); }
  const SamplerParams& params() const { return p_; }
  double mirostat_mu() const { return mu_; }  // Mirostat's running target (bits), 2 * tau at first

  // Grammar state (no-ops without a grammar). The matcher follows every token sample() returns;
  // restart() begins a new output (skip_space: its first token's leading space is dropped from
  // the text), replay() restarts and follows `output` again (after a rewind).
  void restart_grammar(bool skip_space);
  void replay_grammar(const std::vector<int>& output, bool skip_space);
  bool has_grammar() const { return matcher_.has_value(); }
  // The last token sample() drew, with its log-probabilities (params().logprobs not kOff).
  const StepLogprobs& last_logprobs() const { return last_; }

 private:
  void filter(const float* logits, const std::vector<int>& history);        // leaves survivors in cand_
  void apply_slot(int id, Candidates& c, const std::vector<int>& history);  // one sampler_order id
  void temperature_slot(Candidates& c);            // sampler_order slot 5: temperature or dynatemp, smoothing, nsigma
  size_t draw();                                   // an index into cand_ by the softmax of its logits
  size_t draw_verify(int draft, DraftDist q);      // sample_draft()'s accept-or-resample, an index into cand_
  int finish_draw(const float* logits, size_t i);  // Mirostat, log-probabilities, grammar; the token
  double uniform() { return double(rng_() >> 11) * 0x1.0p-53; }  // [0, 1), same on every platform
  void load(const float* logits, bool grammar_first);            // the unbanned (grammar: allowed) tokens into cand_
  void run_chain(const std::vector<int>& history);               // the samplers on cand_
  bool grammar_keep();  // drops survivors the grammar refuses; false if none is left
  void record_logprobs(const float* logits, int token, size_t chosen);
  SamplerParams p_;
  std::vector<int> order_;
  int n_vocab_, eos_;
  std::mt19937_64 rng_;
  double mu_;  // Mirostat state, one per sequence (KoboldCpp keeps one per process)
  Dry dry_;
  Candidates cand_;
  std::vector<uint8_t> banned_;  // [n_vocab] 1 = never sampled
  std::vector<uint8_t> seen_;    // [n_vocab] repetition-penalty scratch, all zero between calls
  std::optional<grammar::Matcher> matcher_;
  std::vector<uint8_t> allowed_;  // [n_vocab] scratch: the grammar's verdict on every token
  std::vector<float> qdense_;     // [n_vocab] scratch: a draft's q by id, all zero between calls
  bool grammar_stuck_ = false;    // no token fits the grammar: sample() returns EOS
  StepLogprobs last_;
};

int argmax(const float* x, int n);

}  // namespace metharme
