// Stop strings matched on the decoded text of a growing reply, also across token boundaries.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace metharme {

// Feed it the text of each new token; it says what may be shown now and whether a stop string
// has appeared. With trim, the stop string is not part of the text, and text that could still
// turn into a stop string is held back until it cannot; without trim, the text ends right after
// the stop string (KoboldAI's default). Text after a stop string is never shown.
class StopStream {
 public:
  StopStream() = default;
  StopStream(std::vector<std::string> stops, bool trim);

  std::string push(std::string_view piece);  // returns the text that became showable
  std::string finish();                      // end of the reply: releases anything held back
  // Disarmed, push() finds no stop string (text that may begin one is still held back).
  void set_armed(bool armed) { armed_ = armed; }
  bool stopped() const { return stop_ >= 0; }
  int stop_index() const { return stop_; }   // which stop string matched, -1 if none
  const std::string& text() const { return text_; }  // the reply so far (final once stopped)
  size_t shown() const { return shown_; }            // bytes of text() already returned

 private:
  std::vector<std::string> stops_;
  bool trim_ = true;
  size_t max_len_ = 0;
  std::string text_;
  size_t shown_ = 0;
  int stop_ = -1;
  bool armed_ = true;
};

}  // namespace metharme
