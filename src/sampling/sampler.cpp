#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "util/error.h"

namespace metharme {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

const char* sampler_name(int id) {
  static const char* names[kSamplerCount] = {"top_k", "top_a", "top_p", "tfs", "typical", "temperature", "rep_pen"};
  return id >= 0 && id < kSamplerCount ? names[id] : "?";
}

std::vector<int> normalize_order(const std::vector<int>& order) {
  std::vector<int> o = order;
  if (o.size() == 6 && std::find(o.begin(), o.end(), 6) == o.end()) o.insert(o.begin(), 6);
  return o;
}

std::vector<int> parse_sampler_order(const std::string& s) {
  std::vector<int> out;
  std::string t = s;
  std::replace(t.begin(), t.end(), ',', ' ');
  std::istringstream in(t);
  std::string item;
  while (in >> item) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) fail("sampler order: '", item, "' is not a sampler id (0..6)");
    out.push_back(v);
  }
  return out;
}

std::string sampler_params_error(const SamplerParams& p, int n_vocab) {
  auto in01 = [](float v) { return v >= 0 && v <= 1; };  // false for NaN
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature)) return cat("temperature must be >= 0 (got ", p.temperature, ")");
  if (p.top_k < 0) return cat("top_k must be >= 0 (got ", p.top_k, ")");
  if (!(p.top_a >= 0) || !std::isfinite(p.top_a)) return cat("top_a must be >= 0 (got ", p.top_a, ")");
  if (!in01(p.top_p)) return cat("top_p must be in [0, 1] (got ", p.top_p, ")");
  if (!in01(p.min_p)) return cat("min_p must be in [0, 1] (got ", p.min_p, ")");
  if (!in01(p.typical)) return cat("typical must be in [0, 1] (got ", p.typical, ")");
  if (!in01(p.tfs)) return cat("tfs must be in [0, 1] (got ", p.tfs, ")");
  if (!(p.rep_pen > 0) || !std::isfinite(p.rep_pen)) return cat("rep_pen must be > 0 (got ", p.rep_pen, ")");
  if (p.rep_pen_range < 0) return cat("rep_pen_range must be >= 0 (got ", p.rep_pen_range, ")");
  if (!(p.rep_pen_slope >= 0) || !std::isfinite(p.rep_pen_slope))
    return cat("rep_pen_slope must be >= 0 (got ", p.rep_pen_slope, ")");
  if (!std::isfinite(p.presence_penalty)) return "presence_penalty must be finite";
  std::vector<int> order = normalize_order(p.sampler_order);
  bool seen[kSamplerCount] = {};
  for (int id : order) {
    if (id < 0 || id >= kSamplerCount) return cat("sampler_order: ", id, " is not a sampler id (0..6)");
    if (seen[id]) return cat("sampler_order: ", id, " (", sampler_name(id), ") appears twice");
    seen[id] = true;
  }
  for (int id : p.banned_tokens)
    if (id < 0 || id >= n_vocab) return cat("banned token ", id, " is outside the vocabulary (", n_vocab, ")");
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= n_vocab) return cat("logit_bias: token ", id, " is outside the vocabulary (", n_vocab, ")");
    if (std::isnan(bias)) return cat("logit_bias: the bias of token ", id, " is not a number");
  }
  return "";
}

std::string sampler_bans_error(const SamplerParams& p, int n_vocab, int eos_id) {
  if (n_vocab <= 0 || p.banned_tokens.size() + 1 < size_t(n_vocab)) return "";  // cannot cover all
  std::vector<uint8_t> banned(size_t(n_vocab), 0);
  for (int id : p.banned_tokens)
    if (id >= 0 && id < n_vocab) banned[size_t(id)] = 1;
  if (p.ban_eos && eos_id >= 0 && eos_id < n_vocab) banned[size_t(eos_id)] = 1;
  if (std::count(banned.begin(), banned.end(), 0) > 0) return "";
  return cat("every token of the vocabulary (", n_vocab, ") is banned", p.ban_eos ? " (EOS by ban_eos_token)" : "",
             ": nothing could be generated");
}

Sampler::Sampler(const SamplerParams& p, int n_vocab, int eos_id)
    : p_(p), order_(normalize_order(p.sampler_order)), n_vocab_(n_vocab), eos_(eos_id), rng_(p.seed),
      banned_(size_t(n_vocab)), seen_(size_t(n_vocab)) {
  MH_CHECK(n_vocab > 0, "sampler: empty vocabulary");
  std::string err = sampler_params_error(p, n_vocab);
  if (!err.empty()) fail("sampler: ", err);
  cand_.reserve(size_t(n_vocab));
  for (int id : p.banned_tokens) banned_[size_t(id)] = 1;
  if (p.ban_eos && eos_id >= 0 && eos_id < n_vocab) banned_[size_t(eos_id)] = 1;
  size_t allowed = size_t(std::count(banned_.begin(), banned_.end(), 0));
  MH_CHECK(allowed > 0, "sampler: every token of the vocabulary is banned");
}

void Sampler::filter(const float* logits, const std::vector<int>& history) {
  Candidates& c = cand_;
  c.items.clear();
  c.sorted = false;
  for (int i = 0; i < n_vocab_; ++i)
    if (!banned_[size_t(i)]) c.items.push_back({i, std::isnan(logits[i]) ? -INFINITY : logits[i]});
  if (!p_.logit_bias.empty()) {
    // The set holds every unbanned id in order; find each biased id by binary search.
    for (const auto& [id, bias] : p_.logit_bias) {
      auto it = std::lower_bound(c.items.begin(), c.items.end(), id, [](const Candidate& a, int v) { return a.id < v; });
      if (it != c.items.end() && it->id == id) it->logit += bias;
    }
  }
  keep_most_likely(c, kMaxCandidates);
  for (int s : order_) {
    switch (s) {
      case 0: apply_top_k(c, p_.top_k); break;
      case 1: apply_top_a(c, p_.top_a); break;
      case 2:
        apply_top_p(c, p_.top_p);
        apply_min_p(c, p_.min_p);
        break;
      case 3: apply_tail_free(c, p_.tfs); break;
      case 4: apply_typical(c, p_.typical); break;
      case 5: apply_temperature(c, p_.temperature); break;
      case 6:
        apply_rep_pen(c, history, p_.rep_pen, p_.rep_pen_range, p_.rep_pen_slope, p_.presence_penalty, seen_);
        break;
      default: break;
    }
  }
  bool any_finite = false;
  for (const auto& it : c.items) any_finite |= std::isfinite(it.logit);
  if (!any_finite) {
    bool broken = true;  // the model's row: any NaN or +inf, or nothing above -inf
    for (int i = 0; i < n_vocab_ && broken; ++i) broken = !(logits[i] > -INFINITY && logits[i] < INFINITY);
    for (int i = 0; i < n_vocab_ && !broken; ++i) broken = std::isnan(logits[i]) || logits[i] == INFINITY;
    if (broken) throw SamplingError("sampler: the model produced no usable logits (NaN or infinite)", true);
    throw SamplingError("sampler: the request's bans leave no token that can be sampled", false);
  }
}

int Sampler::sample(const float* logits, const std::vector<int>& history) {
  filter(logits, history);
  Candidates& c = cand_;
  if (c.items.size() == 1) return c.items[0].id;
  c.softmax();
  // Uniform in [0, 1) from the top 53 bits: the same on every platform for a given seed.
  double r = double(rng_() >> 11) * 0x1.0p-53;
  for (size_t i = 0; i < c.items.size(); ++i) {
    r -= c.p[i];
    if (r < 0) return c.items[i].id;
  }
  // Rounding left r just above 0: the last token with any probability.
  for (size_t i = c.items.size(); i-- > 0;)
    if (c.p[i] > 0) return c.items[i].id;
  return c.items.back().id;
}

std::vector<std::pair<int, double>> Sampler::distribution(const float* logits, const std::vector<int>& history) {
  filter(logits, history);
  cand_.softmax();
  std::vector<std::pair<int, double>> out;
  for (size_t i = 0; i < cand_.items.size(); ++i) out.emplace_back(cand_.items[i].id, cand_.p[i]);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

}  // namespace metharme
