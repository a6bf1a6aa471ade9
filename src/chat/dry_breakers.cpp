#include "chat/dry_breakers.h"

#include "sampling/dry.h"

namespace metharme {

std::string dry_token_text(const Tokenizer& tok, int id) {
  if (tok.is_byte(id)) return std::string(1, char(tok.byte_value(id)));
  if (tok.is_control(id)) return tok.piece(id);
  return tok.piece_text(id);
}

std::vector<std::vector<int>> dry_breakers_for(const Tokenizer& tok, const std::vector<std::string>& breakers) {
  if (breakers.empty()) return {};
  return dry_breaker_sequences(
      breakers, tok.vocab_size(), [&](int id) { return dry_token_text(tok, id); },
      [&](const std::string& s) { return tok.encode(s, false); });
}

}  // namespace metharme
