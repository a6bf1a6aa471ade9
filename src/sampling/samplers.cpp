#include "sampling/samplers.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>

namespace metharme {

namespace {
// Shrinks without the growth path of resize() (which GCC 12 misreads under -Warray-bounds).
void truncate(std::vector<Candidate>& v, size_t n) { v.erase(v.begin() + std::ptrdiff_t(n), v.end()); }

bool before(const Candidate& a, const Candidate& b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

// Keeps items[i] where keep(i) holds, in order; keeps item 0 of a sorted set if all would go.
template <class F>
void keep_if(Candidates& c, F&& keep) {
  size_t w = 0;
  const size_t n = c.items.size();
  size_t best = 0;
  for (size_t i = 0; i < n; ++i) {
    if (before(c.items[i], c.items[best])) best = i;
    if (keep(i)) c.items[w++] = c.items[i];
  }
  if (w == 0 && n > 0) c.items[w++] = c.items[best];  // never empty: the most likely one stays
  truncate(c.items, w);
}
}  // namespace

void Candidates::reserve(size_t n) {
  items.reserve(n);
  p.reserve(n);
  work.reserve(n);
  idx.reserve(n);
  tmp.reserve(n);
  keys.reserve(n);
}

void Candidates::sort() {
  if (sorted) return;
  std::sort(items.begin(), items.end(), before);
  sorted = true;
}

void Candidates::softmax() {
  p.resize(items.size());
  if (items.empty()) return;
  float mx = items[0].logit;
  for (const auto& it : items) mx = std::max(mx, it.logit);
  double sum = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    p[i] = std::exp(double(items[i].logit) - double(mx));
    sum += p[i];
  }
  for (double& v : p) v /= sum;
}

namespace {
// Maps a float to an integer of the same order (-0 and +0 compare equal, so they map alike).
inline uint32_t order_key(float f) {
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  if (b == 0x80000000u) b = 0;
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
}  // namespace

void keep_most_likely(Candidates& c, size_t n) {
  const size_t size = c.items.size();
  if (n == 0 || n >= size) return;
  // A histogram of the top 11 bits of the keys finds the bin that holds the cut; the tokens
  // above that bin all stay, and nth_element picks the rest from that one bin only. A
  // selection over all tokens mispredicts a branch per comparison on every fresh set of logits
  // (bench/chat_bench BM_SamplerTemperatureOnly: a whole draw took ~450 us with it, ~250 now).
  auto& keys = c.keys;
  keys.resize(size);
  for (size_t i = 0; i < size; ++i) keys[i] = order_key(c.items[i].logit);
  constexpr int kShift = 21;
  uint32_t hist[2][1u << (32 - kShift)] = {};  // two tables: fewer stalls on repeated bins
  size_t i = 0;
  for (; i + 2 <= size; i += 2) {
    ++hist[0][keys[i] >> kShift];
    ++hist[1][keys[i + 1] >> kShift];
  }
  if (i < size) ++hist[0][keys[i] >> kShift];
  uint32_t bin = (1u << (32 - kShift)) - 1;
  size_t above = 0;
  for (; above + hist[0][bin] + hist[1][bin] < n; --bin) above += hist[0][bin] + hist[1][bin];
  // Keep the bins above in place (in order); set the cut bin's tokens aside.
  auto& edge = c.tmp;
  edge.clear();
  size_t w = 0;
  for (size_t j = 0; j < size; ++j) {
    const uint32_t b = keys[j] >> kShift;
    if (b == bin) edge.push_back(c.items[j]);
    c.items[w] = c.items[j];
    w += b > bin;
  }
  const size_t rest = n - above;
  std::nth_element(edge.begin(), edge.begin() + std::ptrdiff_t(rest), edge.end(), before);
  truncate(c.items, w);
  c.items.insert(c.items.end(), edge.begin(), edge.begin() + std::ptrdiff_t(rest));
  c.sorted = false;
}

void apply_top_k(Candidates& c, int k) {
  if (k <= 0 || size_t(k) >= c.items.size()) return;
  if (!c.sorted) {
    std::partial_sort(c.items.begin(), c.items.begin() + k, c.items.end(), before);
    c.sorted = true;
  }
  truncate(c.items, size_t(k));
}

void apply_top_a(Candidates& c, float a) {
  if (a <= 0 || c.items.size() <= 1) return;
  c.softmax();
  double pmax = *std::max_element(c.p.begin(), c.p.end());
  double thr = double(a) * pmax * pmax;
  keep_if(c, [&](size_t i) { return c.p[i] >= thr; });
}

void apply_top_p(Candidates& c, float top_p) {
  if (top_p >= 1 || c.items.size() <= 1) return;
  c.sort();
  c.softmax();
  double cum = 0;
  size_t keep = c.items.size();
  for (size_t i = 0; i < c.items.size(); ++i) {
    cum += c.p[i];
    if (cum >= double(top_p)) {
      keep = i + 1;
      break;
    }
  }
  truncate(c.items, keep);
}

void apply_min_p(Candidates& c, float min_p) {
  if (min_p <= 0 || c.items.size() <= 1) return;
  c.softmax();
  double pmax = *std::max_element(c.p.begin(), c.p.end());
  double thr = double(min_p) * pmax;
  keep_if(c, [&](size_t i) { return c.p[i] >= thr; });
}

void apply_tail_free(Candidates& c, float z) {
  const size_t n = c.items.size();
  if (z >= 1 || n <= 2) return;
  c.sort();
  c.softmax();
  // d2[i] = |(p[i] - p[i+1]) - (p[i+1] - p[i+2])|, normalized to sum 1.
  auto& d2 = c.work;
  d2.resize(n - 2);
  double sum = 0;
  for (size_t i = 0; i + 2 < n; ++i) {
    d2[i] = std::fabs((c.p[i] - c.p[i + 1]) - (c.p[i + 1] - c.p[i + 2]));
    sum += d2[i];
  }
  for (double& v : d2) v = sum > 1e-6 ? v / sum : 1.0 / double(d2.size());
  // Keep the tokens before the first i >= 1 whose running sum passes z.
  double cum = 0;
  size_t keep = n;
  for (size_t i = 0; i < d2.size(); ++i) {
    cum += d2[i];
    if (cum > double(z) && i >= 1) {
      keep = i;
      break;
    }
  }
  truncate(c.items, keep);
}

void apply_typical(Candidates& c, float mass) {
  const size_t n = c.items.size();
  if (mass >= 1 || n <= 1) return;
  c.softmax();
  double h = 0;
  for (double p : c.p)
    if (p > 0) h -= p * std::log(p);
  // Distance of each token's surprise from the entropy; the most typical come first.
  auto& dist = c.work;
  dist.resize(n);
  for (size_t i = 0; i < n; ++i) dist[i] = c.p[i] > 0 ? std::fabs(-std::log(c.p[i]) - h) : INFINITY;
  auto& idx = c.idx;
  idx.resize(n);
  std::iota(idx.begin(), idx.end(), 0);
  std::sort(idx.begin(), idx.end(), [&](int32_t a, int32_t b) {
    return dist[size_t(a)] < dist[size_t(b)] || (dist[size_t(a)] == dist[size_t(b)] && a < b);
  });
  double cum = 0;
  size_t keep = n;
  for (size_t i = 0; i < n; ++i) {
    cum += c.p[size_t(idx[i])];
    if (cum > double(mass)) {
      keep = i + 1;
      break;
    }
  }
  // The kept tokens, most typical first.
  c.tmp.resize(keep);
  for (size_t i = 0; i < keep; ++i) c.tmp[i] = c.items[size_t(idx[i])];
  c.items.swap(c.tmp);
  c.sorted = false;
}

void apply_temperature(Candidates& c, float t) {
  if (c.items.empty()) return;
  if (t <= 0) {
    size_t best = 0;
    for (size_t i = 1; i < c.items.size(); ++i)
      if (before(c.items[i], c.items[best])) best = i;
    c.items[0] = c.items[best];
    truncate(c.items, 1);
    c.sorted = true;
    return;
  }
  if (t == 1) return;
  for (auto& it : c.items) it.logit /= t;
}

void apply_rep_pen(Candidates& c, const std::vector<int>& history, float penalty, int range, float slope,
                   float presence, int n_ctx, std::vector<uint8_t>& seen) {
  if (penalty == 1 && presence == 0) return;
  size_t w = size_t(std::max(range, 1));
  if (n_ctx > 0) w = std::min(w, size_t(n_ctx));
  if (!(slope > 0 && slope <= 1)) slope = 1;
  const float far_pen = penalty > 1 ? 1 + (penalty - 1) * slope : penalty;
  // seen: 1 = only in the older half of the window, 2 = in the newer half (the last w - w/2).
  const size_t n = history.size(), split = w / 2;
  auto mark = [&](size_t id, size_t pos) {  // pos: 0 = the window's oldest position
    if (id < seen.size()) seen[id] = std::max<uint8_t>(seen[id], pos >= split ? 2 : 1);
  };
  if (n < w && !seen.empty()) mark(0, w - n - 1);  // the filler's newest position
  const size_t start = n > w ? n - w : 0, offset = w - (n - start);
  for (size_t i = start; i < n; ++i) mark(size_t(history[i]), offset + (i - start));
  for (auto& it : c.items) {
    uint8_t s = seen[size_t(it.id)];
    if (!s) continue;
    float pen = s == 2 ? penalty : far_pen;
    it.logit = it.logit > 0 ? it.logit / pen : it.logit * pen;
    it.logit -= presence;
  }
  if (!seen.empty()) seen[0] = 0;
  for (size_t i = start; i < n; ++i)
    if (size_t(history[i]) < seen.size()) seen[size_t(history[i])] = 0;
  c.sorted = false;
}

namespace {
double entropy_of(const std::vector<double>& p) {
  double h = 0;
  for (double v : p)
    if (v > 0) h -= v * std::log(v);
  return h;
}
}  // namespace

void apply_dynatemp(Candidates& c, float lo, float hi, float exponent) {
  const size_t n = c.items.size();
  if (n <= 1) return;
  c.softmax();
  const double norm = entropy_of(c.p) / std::log(double(n));
  const double t = double(lo) + double(hi - lo) * std::pow(norm, double(exponent));
  if (!(t > 0)) return apply_temperature(c, 0);  // a zero temperature is greedy, as elsewhere
  for (auto& it : c.items) it.logit = float(double(it.logit) / t);
}

void apply_smoothing(Candidates& c, float factor, float curve) {
  if (!(factor > 0) || c.items.size() <= 1) return;
  float h = c.items[0].logit;
  for (const auto& it : c.items) h = std::max(h, it.logit);
  if (!std::isfinite(h)) return;
  const float k = (3 - curve) / 2, s = (curve - 1) / 2;
  for (auto& it : c.items) {
    if (!std::isfinite(it.logit)) continue;  // -inf stays impossible (0 * inf would be NaN)
    const float d = it.logit - h;
    it.logit = -(k * factor * d * d) + s * factor * d * d * d + h;
  }
  c.sorted = false;
}

void apply_nsigma(Candidates& c, float n) {
  const size_t size = c.items.size();
  if (!(n > 0) || size <= 1) return;
  // Statistics of the finite logits; a token at -inf is dropped whatever the cut.
  double mx = -INFINITY, sum = 0;
  size_t finite = 0;
  for (const auto& it : c.items)
    if (std::isfinite(it.logit)) mx = std::max(mx, double(it.logit)), sum += it.logit, ++finite;
  if (finite == 0) return;
  const double mean = sum / double(finite);
  double acc = 0;
  for (const auto& it : c.items)
    if (std::isfinite(it.logit)) acc += (it.logit - mean) * (it.logit - mean);
  const double cut = mx - double(n) * std::sqrt(acc / double(finite));
  keep_if(c, [&](size_t i) { return double(c.items[i].logit) >= cut; });
}

bool xtc_draws(const Candidates& c, float threshold, float probability) {
  return threshold <= 0.5f && probability > 0 && c.items.size() > 1;
}

void apply_xtc(Candidates& c, float threshold, float probability, double roll) {
  if (!xtc_draws(c, threshold, probability) || roll >= double(probability)) return;
  c.sort();
  c.softmax();
  size_t above = 0;
  while (above < c.items.size() && c.p[above] >= double(threshold)) ++above;
  if (above < 2) return;
  for (size_t i = 0; i + 1 < above; ++i) c.items[i].logit -= 999.0f;  // as KoboldCpp: not removed
  c.sorted = false;
}

void apply_mirostat_v1(Candidates& c, double mu, int n_vocab) {
  const size_t n = c.items.size();
  if (n <= 1) return;
  // Least-squares Zipf exponent over the top m = 100 ranks; log(p_i / p_i+1) is a logit difference.
  const size_t m = std::min<size_t>(100, n);
  const bool was_sorted = c.sorted;
  if (!was_sorted) std::partial_sort(c.items.begin(), c.items.begin() + std::ptrdiff_t(m), c.items.end(), before);
  size_t top = 0;  // the estimate uses finite logits only
  while (top < m && std::isfinite(c.items[top].logit)) ++top;
  double sum_tb = 0, sum_tt = 0;
  for (size_t i = 0; i + 1 < top; ++i) {
    const double t = std::log(double(i + 2) / double(i + 1));
    sum_tb += t * (double(c.items[i].logit) - double(c.items[i + 1].logit));
    sum_tt += t * t;
  }
  const double s_hat = sum_tb / sum_tt, eps = s_hat - 1;
  const double k = std::pow(eps * std::pow(2.0, mu) / (1 - std::pow(double(n_vocab), -eps)), 1 / s_hat);
  // KoboldCpp passes int(k) to its top-k, where 0 means "off"; k below 1 keeps one token here.
  c.sorted = was_sorted;
  apply_top_k(c, std::isfinite(k) && k >= 1 ? int(std::min(k, 1e9)) : 1);
}

void apply_mirostat_v2(Candidates& c, double mu) {
  if (c.items.size() <= 1) return;
  // The most likely tokens whose surprise is at most mu: those with p >= 2^-mu (at least one).
  c.softmax();
  const double floor = std::exp2(-mu);
  keep_if(c, [&](size_t i) { return c.p[i] >= floor; });
}

}  // namespace metharme
