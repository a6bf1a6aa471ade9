// Turning logits into the next token: KoboldAI's samplers, applied in a configurable order.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "sampling/dry.h"
#include "sampling/samplers.h"

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
};

constexpr int kSamplerCount = 7;
// Before the samplers run, only this many of the most likely tokens stay candidates, as in
// KoboldCpp; it bounds the cost of the samplers that sort (top-p, tail-free, typical).
constexpr size_t kMaxCandidates = 5000;
const char* sampler_name(int id);  // "top_k", ... "rep_pen"

// "" when p is usable with a vocabulary of n_vocab tokens, else a one-line message naming the
// field. A 6-entry sampler_order without 6 is valid (normalize_order() prepends 6, as United does).
std::string sampler_params_error(const SamplerParams& p, int n_vocab);
// The order actually applied: the list, with 6 prepended when it holds 0..5 only.
std::vector<int> normalize_order(const std::vector<int>& order);
// Parses "6,0,1,3,4,2,5" (commas or spaces); throws Error on anything else.
std::vector<int> parse_sampler_order(const std::string& s);

class Sampler {
 public:
  // Throws Error when the params are invalid (see sampler_params_error).
  Sampler(const SamplerParams& p, int n_vocab, int eos_id = 2);

  // Picks the next token from logits[n_vocab]. `history`: every token of the context so far
  // (prompt and generated) for the repetition penalty. Allocates nothing.
  int sample(const float* logits, const std::vector<int>& history);

  // The distribution sample() draws from: surviving {id, probability}, most likely first.
  std::vector<std::pair<int, double>> distribution(const float* logits, const std::vector<int>& history);

  void reseed(uint64_t seed) { rng_.seed(seed); }
  const SamplerParams& params() const { return p_; }
  double mirostat_mu() const { return mu_; }  // Mirostat's running target (bits), 2 * tau at first

 private:
  void filter(const float* logits, const std::vector<int>& history);        // leaves survivors in cand_
  void apply_slot(int id, Candidates& c, const std::vector<int>& history);  // one sampler_order id
  void temperature_slot(Candidates& c);  // sampler_order slot 5: temperature or dynatemp, smoothing, nsigma
  size_t draw();                         // an index into cand_ by the softmax of its logits
  double uniform() { return double(rng_() >> 11) * 0x1.0p-53; }  // [0, 1), same on every platform
  SamplerParams p_;
  std::vector<int> order_;
  int n_vocab_, eos_;
  std::mt19937_64 rng_;
  double mu_;  // Mirostat state, one per sequence (KoboldCpp keeps one per process)
  Dry dry_;
  Candidates cand_;
  std::vector<uint8_t> banned_;  // [n_vocab] 1 = never sampled
  std::vector<uint8_t> seen_;    // [n_vocab] repetition-penalty scratch, all zero between calls
};

int argmax(const float* x, int n);

}  // namespace metharme
