// An OpenAI completions or chat completions body (the first input byte picks which): JSON, field
// validation, chat rendering in the Metharme format and prompt tokenization.
#include "serve/openai_params.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  static const Tokenizer tok(METHARME_REPO "/models/stories260k/tokenizer.model");
  if (size == 0) return 0;
  const bool chat = data[0] & 1;
  serve::json body;
  try {
    body = parse_json(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1), "request body");
  } catch (const Error&) {
    return 0;
  }
  serve::FieldErrors errs;
  serve::OpenAIParams p = serve::read_openai(body, tok, chat, errs);
  if (!errs.empty()) {
    errs.first();
    return 0;
  }
  if (p.ids.empty() || p.n < 1 || p.n > 5) __builtin_trap();
  for (int id : p.ids)
    if (id < 0 || id >= tok.vocab_size()) __builtin_trap();
  return 0;
}
