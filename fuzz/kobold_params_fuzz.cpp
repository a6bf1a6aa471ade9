// A KoboldAI generate body, as the server reads it: JSON, field validation, prompt trimming
// (memory, max_context_length, max_length), the generation specs and output formatting.
#include "fuzz/fuzz_util.h"
#include "serve/params.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/json.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  static const Tokenizer tok(METHARME_REPO "/models/stories260k/tokenizer.model");
  constexpr int kServerCtx = 512;
  serve::json body;
  try {
    body = parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "request body");
  } catch (const Error&) {
    return 0;
  }
  serve::FieldErrors errs;
  serve::KoboldParams p = serve::read_kobold(body, tok, tok.vocab_size(), kServerCtx, 180, errs);
  if (!errs.empty()) {
    errs.to_json().dump();
    return 0;
  }
  if (p.max_length >= p.max_context_length) return 0;  // answered with token_overflow
  std::vector<int> ids = serve::kobold_prompt_ids(p, tok);
  if (ids.empty() || int(ids.size()) + p.max_length > p.max_context_length) __builtin_trap();
  std::vector<serve::GenSpec> specs = serve::make_specs(p.common, p.max_length, "fuzz", ids, p.n, true);
  if (specs.size() != size_t(p.n)) __builtin_trap();
  serve::format_output(p, p.prompt);
  return 0;
}
