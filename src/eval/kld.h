// Statistics of next-token distributions given as logits rows: log-normalizers, NLL of the true
// next token, KL-divergence of one model's distribution from a base model's, and summaries.
#pragma once

#include <cstdint>
#include <vector>

namespace metharme::eval {

struct RowSummary {
  double lse = 0;      // log(sum(exp(logits))), in double
  int32_t argmax = 0;  // first index of the largest logit
};
RowSummary summarize_row(const float* logits, int n_vocab);

// -log softmax(logits)[target]
inline double row_nll(const float* logits, const RowSummary& s, int target) { return s.lse - double(logits[target]); }

// KL(P || Q) = sum_v P(v) * (log P(v) - log Q(v)), P = softmax(p), Q = softmax(q), in nats.
double kl_divergence(const float* p, double p_lse, const float* q, double q_lse, int n_vocab);

struct KldSummary {
  int64_t count = 0;
  double mean = 0, median = 0, p99 = 0, max = 0;
  double top1_agreement = 0;  // fraction of positions where both models' most likely token agrees
};
// values: one KL-divergence per scored position (consumed). Percentiles interpolate linearly
// between order statistics (NumPy's default).
KldSummary summarize_kld(std::vector<float> values, int64_t top1_same);
double percentile_sorted(const std::vector<float>& sorted, double q);  // q in [0, 1]

}  // namespace metharme::eval
