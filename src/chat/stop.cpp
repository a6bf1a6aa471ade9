#include "chat/stop.h"

#include <algorithm>

namespace metharme {

StopStream::StopStream(std::vector<std::string> stops, bool trim) : trim_(trim) {
  for (auto& s : stops)
    if (!s.empty()) {
      max_len_ = std::max(max_len_, s.size());
      stops_.push_back(std::move(s));
    }
}

std::string StopStream::push(std::string_view piece) {
  if (stopped() || piece.empty()) return {};
  const size_t old = text_.size();
  text_.append(piece);
  // A new match must end inside the new piece, so it starts at most max_len-1 bytes earlier.
  const size_t from = old >= max_len_ ? old - max_len_ + 1 : 0;
  size_t best = std::string::npos;
  for (size_t i = 0; armed_ && i < stops_.size(); ++i) {
    size_t at = text_.find(stops_[i], from);
    if (at < best) {
      best = at;
      stop_ = int(i);
    }
  }
  size_t end = text_.size();
  if (best != std::string::npos) {
    end = trim_ ? best : best + stops_[size_t(stop_)].size();
    text_.resize(end);
  } else if (trim_ && max_len_ > 1) {
    // Hold back the longest tail that begins some stop string.
    for (size_t k = std::min(max_len_ - 1, text_.size()); k > 0; --k) {
      std::string_view tail(text_.data() + text_.size() - k, k);
      bool prefix = std::any_of(stops_.begin(), stops_.end(),
                                [&](const std::string& s) { return s.size() > k && s.compare(0, k, tail) == 0; });
      if (prefix) {
        end = text_.size() - k;
        break;
      }
    }
  }
  end = std::max(end, shown_);
  std::string out = text_.substr(shown_, end - shown_);
  shown_ = end;
  return out;
}

std::string StopStream::finish() {
  std::string out = text_.substr(std::min(shown_, text_.size()));
  shown_ = text_.size();
  return out;
}

}  // namespace metharme
