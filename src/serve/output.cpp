#include "serve/output.h"

#include <algorithm>

namespace metharme::serve {

namespace {
char ascii_lower(char c) { return c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c; }
}  // namespace

OutputText::OutputText(const Tokenizer& tok, bool at_start, std::vector<std::string> stop, bool trim_stop,
                       std::vector<std::string> banned)
    : at_start_(at_start), stops_(std::move(stop)), trim_stop_(trim_stop), dec_(tok, at_start),
      stop_(stops_, trim_stop) {
  for (auto& b : banned) {
    if (b.empty()) continue;
    for (char& c : b) c = ascii_lower(c);
    max_banned_ = std::max(max_banned_, b.size());
    banned_.push_back(std::move(b));
  }
}

void OutputText::append_token_text(int id) {
  stop_.set_armed(size() + 1 >= min_tokens_);
  stop_.push(dec_.push(id));
  const std::string& t = stop_.text();
  lower_.resize(std::min(lower_.size(), t.size()));  // a stop string may have cut the text
  for (size_t i = lower_.size(); i < t.size(); ++i) lower_.push_back(ascii_lower(t[i]));
  tokens_.push_back(id);
  ends_.push_back(t.size());
}

OutputText::Event OutputText::push(int id) {
  const size_t prev = text().size();
  append_token_text(id);
  // A banned phrase that appears now ends inside the new text.
  size_t best = std::string::npos;
  if (text().size() > prev)
    for (const auto& b : banned_) {
      size_t from = prev + 1 >= b.size() ? prev + 1 - b.size() : 0;
      best = std::min(best, lower_.find(b, from));
    }
  if (best != std::string::npos) {
    banned_token_ = int(std::upper_bound(ends_.begin(), ends_.end(), best) - ends_.begin());
    return Event::kBanned;
  }
  return stop_.stopped() ? Event::kStop : Event::kContinue;
}

void OutputText::rewind(int t) {
  std::vector<int> keep(tokens_.begin(), tokens_.begin() + std::clamp(t, 0, size()));
  tokens_.clear();
  ends_.clear();
  lower_.clear();
  dec_.reset(at_start_);
  stop_ = StopStream(stops_, trim_stop_);
  for (int id : keep) append_token_text(id);
}

size_t OutputText::committed() const {
  size_t limit = stop_.shown();
  if (max_banned_ > 1 && !ends_.empty()) {
    // A phrase found later starts at or after n - (max_banned_ - 1); it would rewind to the start
    // of the token holding that byte.
    const size_t n = text().size();
    size_t from = n >= max_banned_ - 1 ? n - (max_banned_ - 1) : 0;
    size_t t = size_t(std::upper_bound(ends_.begin(), ends_.end(), from) - ends_.begin());
    limit = std::min(limit, t == 0 ? size_t(0) : ends_[t - 1]);
  }
  return limit;
}

std::string OutputText::final_text() {
  if (!stop_.stopped()) stop_.push(dec_.flush());
  stop_.finish();
  return stop_.text();
}

}  // namespace metharme::serve
