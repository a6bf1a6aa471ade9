#include "support/stats_util.h"

#include <cmath>
#include <limits>

namespace metharme::test {

double chi2_crit(int df) {
  const double z = 3.09, k = 2.0 / (9.0 * df);
  return df * std::pow(1 - k + z * std::sqrt(k), 3);
}

std::pair<double, int> chi2_two_sample(const Counts& a, const Counts& b) {
  std::map<int64_t, std::pair<int, int>> all;
  for (auto [k, n] : a) all[k].first += n;
  for (auto [k, n] : b) all[k].second += n;
  double stat = 0;
  int bins = 0, pa = 0, pb = 0;
  for (auto [k, ab] : all) {
    if (ab.first + ab.second < 10) {
      pa += ab.first, pb += ab.second;
      continue;
    }
    stat += double(ab.first - ab.second) * (ab.first - ab.second) / (ab.first + ab.second);
    ++bins;
  }
  if (pa + pb > 0) stat += double(pa - pb) * (pa - pb) / (pa + pb), ++bins;
  return {stat, bins - 1};
}

std::pair<double, int> chi2_fit(const Counts& counts, const Probs& p) {
  double n = 0;
  for (auto [k, c] : counts) n += c;
  for (auto [k, c] : counts)
    if (c > 0 && !p.count(k)) return {std::numeric_limits<double>::infinity(), 1};
  double stat = 0, pooled_e = 0, pooled_o = 0;
  int bins = 0;
  for (auto [k, pk] : p) {
    auto it = counts.find(k);
    const double o = it == counts.end() ? 0 : it->second, e = n * pk;
    if (e < 5) {
      pooled_e += e, pooled_o += o;
      continue;
    }
    stat += (o - e) * (o - e) / e;
    ++bins;
  }
  if (pooled_e > 0) stat += (pooled_o - pooled_e) * (pooled_o - pooled_e) / pooled_e, ++bins;
  return {stat, bins - 1};
}

}  // namespace metharme::test
