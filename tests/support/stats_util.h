// Chi-square tests for the statistical tests of sampling (speculative decoding, samplers).
#pragma once

#include <cstdint>
#include <map>
#include <utility>

namespace metharme::test {

using Counts = std::map<int64_t, int>;    // outcome -> times seen
using Probs = std::map<int64_t, double>;  // outcome -> probability

// The chi-square critical value for df degrees of freedom at significance 1e-3 (z = 3.09,
// Wilson-Hilferty approximation; within 1% of the exact value for df >= 3).
double chi2_crit(int df);

// Two-sample homogeneity statistic of two equal-size samples (counts per outcome); outcomes seen
// fewer than 10 times in both together are pooled into one bin. Returns {statistic, df}.
std::pair<double, int> chi2_two_sample(const Counts& a, const Counts& b);

// Goodness of fit of counts (n draws in all) to probabilities `p` (outcome -> probability;
// missing outcomes have probability 0); outcomes with an expected count below 5 are pooled into
// one bin, and a count outside p's support makes the statistic infinite. Returns {statistic, df}.
std::pair<double, int> chi2_fit(const Counts& counts, const Probs& p);

}  // namespace metharme::test
