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
  bool sorted = false;       // items in descending logit order (ties: lower id first)
  std::vector<double> p;     // scratch: probabilities of items, same order
  std::vector<double> work;  // scratch for the samplers
  std::vector<int32_t> idx;  // scratch for the samplers
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
void apply_top_a(Candidates& c, float a);        // remove p < a * p_max^2
void apply_top_p(Candidates& c, float top_p);    // smallest most-likely prefix with sum >= top_p
void apply_min_p(Candidates& c, float min_p);    // remove p < min_p * p_max
void apply_tail_free(Candidates& c, float z);
void apply_typical(Candidates& c, float mass);
void apply_temperature(Candidates& c, float t);  // t <= 0: keep only the most likely token
// Repetition penalty over the last `range` tokens of history (0: all). Tokens in the newer half
// of that window are penalized by `penalty`, tokens only in the older half by
// 1 + (penalty - 1) * slope (slope outside (0, 1] counts as 1). Positive logits are divided by
// the penalty, others multiplied; `presence` is then subtracted. seen: [n_vocab] zeros, restored.
void apply_rep_pen(Candidates& c, const std::vector<int>& history, float penalty, int range, float slope,
                   float presence, std::vector<uint8_t>& seen);

}  // namespace metharme
