// DRY ("don't repeat yourself", KoboldCpp's dry_* fields): a penalty on the token that would
// extend a sequence already seen earlier in the context, growing exponentially with its length.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "sampling/samplers.h"

namespace metharme {

// Sequence breakers as token sequences, head first: a repeat never reaches back across one.
// Built as KoboldCpp builds them from its dry_sequence_breakers strings: every token whose text
// contains the string is a one-token breaker; a token whose text ends with a prefix of the
// string is the head of a breaker whose tail is the rest of the string, encoded without BOS (at
// most kDryMaxTail tokens). Strings are cut to kDryMaxChars bytes. token_text(id): the token's
// text as the model writes it; encode(s): s as token ids without BOS.
constexpr size_t kDryMaxChars = 40;
constexpr size_t kDryMaxTail = 20;
std::vector<std::vector<int>> dry_breaker_sequences(const std::vector<std::string>& breakers, int n_vocab,
                                                    const std::function<std::string(int)>& token_text,
                                                    const std::function<std::vector<int>(const std::string&)>& encode);

// The DRY stage of one sampler, with its scratch (sized once, reused for every token).
class Dry {
 public:
  // multiplier <= 0 or base <= 0: off. last_n <= 0 (or above n_ctx): the whole context.
  Dry(float multiplier, float base, int allowed_length, int last_n, std::vector<std::vector<int>> breakers);
  bool on() const { return multiplier_ > 0 && base_ > 0; }

  // Penalties for the next token after `ctx` (prompt and reply so far), bounded by n_ctx
  // (0: no bound): {token, amount subtracted from its logit}, at most one per token.
  const std::vector<std::pair<int, float>>& penalties(const std::vector<int>& ctx, int n_ctx);
  // Subtracts them from c, whose items must be in ascending id order (the full set before any cut).
  void apply(Candidates& c, const std::vector<int>& ctx, int n_ctx);

 private:
  int repeat_limit(const int* w, int n) const;  // tokens after the last breaker in the window

  float multiplier_, base_;
  int allowed_, last_n_;
  std::vector<std::vector<int>> seqs_;        // breakers, sorted by head
  std::vector<int> rev_, z_;                  // scratch: the window reversed, its Z-array
  std::vector<std::pair<int, int>> longest_;  // scratch: {token, longest repeat it extends}
  std::vector<std::pair<int, float>> out_;
};

}  // namespace metharme
