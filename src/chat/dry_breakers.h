// DRY sequence breakers (strings, as clients send them) to the token sequences the sampler
// matches, tokenized as KoboldCpp does it (sampling/dry.h).
#pragma once

#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace metharme {

// A token's text as KoboldCpp matches breakers against it: byte pieces as their byte, control
// tokens as their piece ("</s>"), others with U+2581 as a space.
std::string dry_token_text(const Tokenizer& tok, int id);
// Every breaker's sequences; costs one pass over the vocabulary per breaker.
std::vector<std::vector<int>> dry_breakers_for(const Tokenizer& tok, const std::vector<std::string>& breakers);

}  // namespace metharme
