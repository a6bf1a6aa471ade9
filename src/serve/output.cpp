#include "serve/output.h"

#include <algorithm>

namespace metharme::serve {

namespace {
char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }
}  // namespace

OutputText::OutputText(const Tokenizer& tok, bool at_start, std::vector<std::string> stop, bool trim_stop,
                       std::vector<std::string> banned)
    : tok_(&tok), at_start_(at_start), trim_stop_(trim_stop), dec_(tok, at_start) {
  for (auto& s : stop)
    if (!s.empty()) stop_.push_back(std::move(s));
  for (auto& b : banned) {
    if (b.empty()) continue;
    for (char& c : b) c = ascii_lower(c);
    max_banned_ = std::max(max_banned_, b.size());
    banned_.push_back(std::move(b));
  }
}

void OutputText::append_token_text(int id) {
  size_t prev = text_.size();
  text_ += dec_.push(id);
  for (size_t i = prev; i < text_.size(); ++i) lower_.push_back(ascii_lower(text_[i]));
  tokens_.push_back(id);
  ends_.push_back(text_.size());
}

OutputText::Event OutputText::push(int id) {
  const size_t prev = text_.size();
  append_token_text(id);
  if (text_.size() == prev) return Event::kContinue;
  // A phrase or stop string that appears now must end inside the new text.
  size_t best = std::string::npos;
  for (const auto& b : banned_) {
    size_t from = prev + 1 >= b.size() ? prev + 1 - b.size() : 0;
    size_t pos = lower_.find(b, from);
    if (pos < best) best = pos;
  }
  if (best != std::string::npos) {
    banned_token_ = int(std::upper_bound(ends_.begin(), ends_.end(), best) - ends_.begin());
    return Event::kBanned;
  }
  size_t stop_len = 0;
  for (const auto& s : stop_) {
    size_t from = prev + 1 >= s.size() ? prev + 1 - s.size() : 0;
    size_t pos = text_.find(s, from);
    if (pos < best) {
      best = pos;
      stop_len = s.size();
    }
  }
  if (best == std::string::npos) return Event::kContinue;
  cut_ = trim_stop_ ? best : best + stop_len;
  return Event::kStop;
}

void OutputText::rewind(int t) {
  std::vector<int> keep(tokens_.begin(), tokens_.begin() + std::clamp(t, 0, size()));
  tokens_.clear();
  ends_.clear();
  text_.clear();
  lower_.clear();
  dec_.reset(at_start_);
  cut_ = std::string::npos;
  for (int id : keep) append_token_text(id);
}

size_t OutputText::committed() const {
  const size_t n = text_.size();
  size_t limit = n;
  for (const auto& s : stop_) {
    for (size_t k = std::min(s.size() - 1, n); k > 0; --k) {
      if (text_.compare(n - k, k, s, 0, k) == 0) {
        limit = std::min(limit, n - k);
        break;
      }
    }
  }
  if (max_banned_ > 1 && !ends_.empty()) {
    // A phrase found later starts at or after n - (max_banned_ - 1); it would rewind to the start
    // of the token holding that byte.
    size_t from = n >= max_banned_ - 1 ? n - (max_banned_ - 1) : 0;
    size_t t = size_t(std::upper_bound(ends_.begin(), ends_.end(), from) - ends_.begin());
    size_t begin = t == 0 ? 0 : ends_[t - 1];
    limit = std::min(limit, begin);
  }
  return limit;
}

std::string OutputText::final_text() {
  if (cut_ != std::string::npos) return text_.substr(0, cut_);
  std::string tail = dec_.flush();
  text_ += tail;
  lower_ += tail;
  if (!ends_.empty()) ends_.back() = text_.size();
  return text_;
}

}  // namespace metharme::serve
