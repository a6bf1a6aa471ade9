// The decoded output of one generation, token by token: stop strings (chat/stop.h), banned
// phrases (KoboldCpp's banned_tokens of several characters), and how much of the text is final
// (safe to stream) while a phrase might still be forming and could be rewound.
#pragma once

#include <string>
#include <vector>

#include "chat/stop.h"
#include "tokenizer/tokenizer.h"

namespace metharme::serve {

class OutputText {
 public:
  // at_start: the output begins a text (the prompt had no text), so its leading space is dropped.
  // banned: phrases matched case-insensitively (ASCII); the caller rewinds when one appears.
  OutputText(const Tokenizer& tok, bool at_start, std::vector<std::string> stop, bool trim_stop,
             std::vector<std::string> banned);

  enum class Event { kContinue, kStop, kBanned };
  // Appends a generated token. kStop: a stop string completed (see final_text). kBanned: a banned
  // phrase appeared; it begins in token banned_token(), which the caller should rewind to.
  Event push(int id);
  int banned_token() const { return banned_token_; }
  // Drops the tokens from index t on.
  void rewind(int t);
  // Stop strings complete only in the n-th token or later (min_tokens); 0: from the first.
  void set_min_tokens(int n) { min_tokens_ = n; }

  int size() const { return int(tokens_.size()); }
  const std::vector<int>& tokens() const { return tokens_; }
  const std::string& text() const { return stop_.text(); }
  // Bytes of text() that no later token can take back: everything but a tail that could still
  // become a stop string (it may be cut) or a banned phrase (it would be rewound).
  size_t committed() const;
  // The output once generation has ended: cut at the stop string if one matched, and with any
  // bytes that never formed a character flushed as U+FFFD.
  std::string final_text();

 private:
  void append_token_text(int id);

  bool at_start_;
  std::vector<std::string> stops_;
  bool trim_stop_;
  std::vector<std::string> banned_;
  size_t max_banned_ = 0;
  StreamDecoder dec_;
  StopStream stop_;           // holds the text (cut at a stop string once one matched)
  std::vector<int> tokens_;
  std::vector<size_t> ends_;  // ends_[i]: text().size() after token i
  std::string lower_;         // text() with ASCII letters lower-cased
  int banned_token_ = -1;
  int min_tokens_ = 0;
};

}  // namespace metharme::serve
