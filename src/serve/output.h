// The decoded output of one generation, token by token: stop strings, banned phrases, and how much
// of the text is final (safe to stream) while a stop string or phrase might still be forming.
#pragma once

#include <string>
#include <vector>

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

  int size() const { return int(tokens_.size()); }
  const std::vector<int>& tokens() const { return tokens_; }
  const std::string& text() const { return text_; }
  // Bytes of text() that no later token can take back: everything but a tail that could still
  // become a stop string (it may be cut) or a banned phrase (it would be rewound).
  size_t committed() const;
  // The output once generation has ended: cut at the stop string if one matched, and with any
  // bytes that never formed a character flushed as U+FFFD.
  std::string final_text();

 private:
  void append_token_text(int id);

  const Tokenizer* tok_;
  bool at_start_;
  std::vector<std::string> stop_;
  bool trim_stop_;
  std::vector<std::string> banned_;
  size_t max_banned_ = 0;
  StreamDecoder dec_;
  std::vector<int> tokens_;
  std::vector<size_t> ends_;  // ends_[i]: text_.size() after token i
  std::string text_, lower_;  // lower_: text_ with ASCII letters lower-cased
  size_t cut_ = std::string::npos;  // where the text ends after a stop string
  int banned_token_ = -1;
};

}  // namespace metharme::serve
