// OpenAI /v1/completions and /v1/chat/completions bodies read into generation settings and
// prompt tokens (no engine needed: the routes in api_openai.cpp add the context checks).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "serve/params.h"

namespace metharme::serve {

struct OpenAIParams {
  CommonParams common;
  std::optional<int64_t> max_tokens;  // max_tokens, max_completion_tokens or max_new_tokens
  bool stream = false, include_usage = false, echo = false;
  int n = 1;
  std::vector<int> ids;   // the prompt's tokens, BOS included (chat: the Metharme rendering)
  std::string echo_text;  // completions: the prompt as text, for echo
};

// Validation failures go to `errs` by field; `body` must be a JSON object.
OpenAIParams read_openai(const json& body, const Tokenizer& tok, bool chat, FieldErrors& errs);

}  // namespace metharme::serve
