#include "sampling/dry.h"

#include <algorithm>
#include <cmath>

namespace metharme {

std::vector<std::vector<int>> dry_breaker_sequences(const std::vector<std::string>& breakers, int n_vocab,
                                                    const std::function<std::string(int)>& token_text,
                                                    const std::function<std::vector<int>(const std::string&)>& encode) {
  struct Breaker {
    std::string s;
    bool all_high;                        // only non-ASCII bytes: no multi-token sequences (as KoboldCpp)
    std::vector<std::vector<int>> tails;  // tails[i]: encode(s.substr(i)), cut; filled when first needed
    std::vector<bool> have;
  };
  std::vector<Breaker> bs;
  for (std::string s : breakers) {
    if (s.empty()) continue;
    if (s.size() > kDryMaxChars) s.resize(kDryMaxChars);
    const bool high = std::all_of(s.begin(), s.end(), [](char ch) { return uint8_t(ch) > 127; });
    const size_t n = s.size();
    bs.push_back({std::move(s), high, std::vector<std::vector<int>>(n), std::vector<bool>(n, false)});
  }
  std::vector<std::vector<int>> out;
  if (bs.empty()) return out;
  for (int v = 0; v < n_vocab; ++v) {
    const std::string word = token_text(v);  // once per token, for every breaker
    bool whole = false;                      // some breaker lies inside this one token
    for (Breaker& b : bs) {
      const std::string& s = b.s;
      if (word.find(s) != std::string::npos) {
        whole = true;
        continue;
      }
      if (b.all_high) continue;
      // The token ends with a proper prefix of s: it heads a sequence whose tail is the rest.
      for (size_t pos = word.find(s[0]); pos != std::string::npos; pos = word.find(s[0], pos + 1)) {
        size_t i = 1;
        while (i < s.size() && pos + i < word.size() && word[pos + i] == s[i]) ++i;
        if (pos + i != word.size()) continue;  // a mismatch before the token's end
        if (!b.have[i]) {
          b.tails[i] = encode(s.substr(i));
          if (b.tails[i].size() > kDryMaxTail) b.tails[i].resize(kDryMaxTail);
          b.have[i] = true;
        }
        std::vector<int> seq{v};
        seq.insert(seq.end(), b.tails[i].begin(), b.tails[i].end());
        out.push_back(std::move(seq));
      }
    }
    if (whole) out.push_back({v});
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

Dry::Dry(float multiplier, float base, int allowed_length, int last_n, std::vector<std::vector<int>> breakers)
    : multiplier_(multiplier), base_(base), allowed_(allowed_length), last_n_(last_n), seqs_(std::move(breakers)) {
  seqs_.erase(std::remove_if(seqs_.begin(), seqs_.end(), [](const auto& s) { return s.empty(); }), seqs_.end());
  std::sort(seqs_.begin(), seqs_.end());
}

int Dry::repeat_limit(const int* w, int n) const {
  if (seqs_.empty()) return n;
  // From the newest token back, the first position that ends a whole breaker (the longest one
  // heading there) limits a repeat to the tokens after it.
  for (int i = 0; i < n; ++i) {
    const int ix = n - 1 - i;
    auto it =
        std::lower_bound(seqs_.begin(), seqs_.end(), w[ix], [](const std::vector<int>& s, int v) { return s[0] < v; });
    int longest = -1;
    for (; it != seqs_.end() && (*it)[0] == w[ix]; ++it) {
      const int tail = int(it->size()) - 1;
      if (tail <= longest || tail > i) continue;
      if (std::equal(it->begin() + 1, it->end(), w + ix + 1)) longest = tail;
    }
    if (longest >= 0) return i - longest;
  }
  return n;
}

const std::vector<std::pair<int, float>>& Dry::penalties(const std::vector<int>& ctx, int n_ctx) {
  out_.clear();
  if (!on()) return out_;
  size_t range = last_n_ > 0 ? size_t(last_n_) : ctx.size();
  if (n_ctx > 0 && (last_n_ <= 0 || last_n_ > n_ctx)) range = size_t(n_ctx);
  const int n = int(std::min(ctx.size(), range));
  if (n <= allowed_) return out_;
  const int* w = ctx.data() + ctx.size() - size_t(n);
  const int limit = repeat_limit(w, n);
  if (limit <= allowed_) return out_;

  // z_[k]: how many tokens the window's suffix shares with the suffix ending k tokens earlier
  // (the Z-array of the reversed window), so a repeat of the newest tokens ends at n-1-k.
  rev_.resize(size_t(n));
  z_.assign(size_t(n), 0);
  for (int k = 0; k < n; ++k) rev_[size_t(k)] = w[n - 1 - k];
  for (int k = 1, l = 0, r = 0; k < n; ++k) {
    int len = k < r ? std::min(r - k, z_[size_t(k - l)]) : 0;
    while (k + len < n && rev_[size_t(len)] == rev_[size_t(k + len)]) ++len;
    z_[size_t(k)] = len;
    if (k + len > r) l = k, r = k + len;
  }
  // The token after each such earlier occurrence would extend the repeat.
  longest_.clear();
  for (int k = 1; k < n; ++k) {
    const int len = std::min(z_[size_t(k)], limit);
    if (len >= allowed_) longest_.emplace_back(w[n - k], len);
  }
  if (longest_.empty()) return out_;
  std::sort(longest_.begin(), longest_.end());
  // The exponent is capped so that base^exponent stays a finite float.
  const int max_exp = base_ > 1.000001f ? int(88.7228391f / std::log(base_)) : 0;
  for (size_t i = 0; i < longest_.size(); ++i) {
    if (i + 1 < longest_.size() && longest_[i + 1].first == longest_[i].first) continue;  // the longest is last
    int e = longest_[i].second - allowed_;
    if (max_exp > 0 && e > max_exp) e = max_exp;
    out_.emplace_back(longest_[i].first, float(double(multiplier_) * std::pow(double(base_), e)));
  }
  return out_;
}

void Dry::apply(Candidates& c, const std::vector<int>& ctx, int n_ctx) {
  for (const auto& [id, pen] : penalties(ctx, n_ctx)) {
    auto it = std::lower_bound(c.items.begin(), c.items.end(), id, [](const Candidate& a, int v) { return a.id < v; });
    if (it != c.items.end() && it->id == id) it->logit -= pen;
  }
  c.sorted = false;
}

}  // namespace metharme
