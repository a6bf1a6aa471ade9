// The individual samplers, each a step on a shrinking candidate set. Definitions follow KoboldCpp
// (../shared/docs/kobold-api.md section 3.2): "remove" drops a token from the set, every step
// keeps at least one token, and probabilities are the softmax of the current set's logits.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace metharme {

struct Candidate {
  int32_t id;
  float logit;
};

// The tokens still in the running. Vectors keep their capacity between tokens, so the steps
// below allocate nothing once sized for the vocabulary.
struct Candidates {
  std::vector<Candidate> items;
  bool sorted = false;         // items in descending logit order (ties: lower id first)
  std::vector<double> p;       // scratch: probabilities of items, same order
  std::vector<double> work;    // scratch for the samplers
  std::vector<int32_t> idx;    // scratch for the samplers
  std::vector<Candidate> tmp;  // scratch for reordering
  std::vector<uint32_t> keys;  // scratch: order-preserving integer keys of the logits

  void reserve(size_t n);
  void sort();
  void softmax();  // fills p from the current logits
};

// Keeps the n most likely tokens (equal logits: the lower id), in no particular order; O(size),
// a cheap first cut.
void keep_most_likely(Candidates& c, size_t n);

// Sampler steps. Neutral values (k <= 0, a <= 0, p >= 1, z >= 1, T == 1, penalty 1) do nothing.
void apply_top_k(Candidates& c, int k);
void apply_top_a(Candidates& c, float a);      // remove p < a * p_max^2
void apply_top_p(Candidates& c, float top_p);  // smallest most-likely prefix with sum >= top_p
void apply_min_p(Candidates& c, float min_p);  // remove p < min_p * p_max
void apply_tail_free(Candidates& c, float z);
void apply_typical(Candidates& c, float mass);
void apply_temperature(Candidates& c, float t);  // t <= 0: keep only the most likely token
// Repetition penalty (KoboldCpp rep_pen, rep_pen_range, rep_pen_slope, presence_penalty) over a
// window of the last max(range, 1) context tokens, at most n_ctx (0: no bound); as in KoboldCpp,
// a window longer than the history is filled at its front with token 0. Tokens in the newer
// half of the window (the last ceil(w/2) positions) are penalized by `penalty`, tokens only in
// the older half by 1 + (penalty - 1) * slope (slope outside (0, 1] counts as 1). Positive
// logits are divided by the penalty, others multiplied; `presence` is then subtracted.
// seen: [n_vocab] zeros, restored.
void apply_rep_pen(Candidates& c, const std::vector<int>& history, float penalty, int range, float slope,
                   float presence, int n_ctx, std::vector<uint8_t>& seen);

// The samplers KoboldCpp runs beside sampler_order (gpttype_adapter.cpp), one per field.
// dynatemp_range: in slot 5 instead of plain temperature, T = lo + (hi - lo) * (H / ln n)^exponent
// with H the entropy of the set's softmax and n its size; T <= 0 keeps the most likely token.
void apply_dynatemp(Candidates& c, float lo, float hi, float exponent);
// smoothing_factor f, smoothing_curve: with h the top logit and d = logit - h (<= 0),
// logit' = h - k*f*d^2 + s*f*d^3, k = (3 - curve) / 2, s = (curve - 1) / 2 (curve 1: quadratic).
void apply_smoothing(Candidates& c, float factor, float curve);
// nsigma (top-n-sigma): drops tokens whose logit is below max - n * sd of the set's logits.
void apply_nsigma(Candidates& c, float n);
// XTC: whether it draws at all (threshold <= 0.5, probability > 0, two or more tokens), and the
// cut for a draw `roll` in [0, 1): when roll < probability and two or more tokens have
// p >= threshold, every one of them but the least likely loses 999 from its logit.
bool xtc_draws(const Candidates& c, float threshold, float probability);
void apply_xtc(Candidates& c, float threshold, float probability, double roll);
// Mirostat cuts at the current mu (bits); the Sampler draws and then moves mu.
// v1: top-k with k from the Zipf exponent estimated on the top 100 tokens and n_vocab (k >= 1).
void apply_mirostat_v1(Candidates& c, double mu, int n_vocab);
// v2: keeps the most likely tokens whose surprise -log2 p is at most mu (at least one).
void apply_mirostat_v2(Candidates& c, double mu);

}  // namespace metharme
