// A GBNF grammar (or, when the input is JSON, a JSON Schema converted to GBNF), then matching:
// a grammar that parses is followed over the input's bytes as one-byte tokens.
#include <nlohmann/json.hpp>

#include "grammar/gbnf.h"
#include "grammar/json_schema.h"
#include "grammar/matcher.h"
#include "util/error.h"

namespace {
// Tokens 0..255: the single bytes (0x80 and up are byte pieces); 256..: a few longer texts.
const metharme::grammar::TokenTable& table() {
  static const metharme::grammar::TokenTable t = [] {
    std::vector<std::string> texts;
    for (int b = 0; b < 256; ++b) texts.push_back(std::string(1, char(b)));
    for (const char* s : {"", "{\"", "\": ", "true", " the", "\xc3\xa9", "\xe2\x82\xac"}) texts.push_back(s);
    return metharme::grammar::TokenTable(texts);
  }();
  return t;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  try {
    std::shared_ptr<const grammar::Grammar> g;
    nlohmann::json schema = nlohmann::json::parse(text, nullptr, false);
    if (!schema.is_discarded() && schema.is_object())
      g = grammar::parse_gbnf(grammar::schema_to_gbnf(schema));
    else
      g = grammar::parse_gbnf(text);
    grammar::Matcher m(g, table());
    std::vector<uint8_t> ok;
    m.allowed_tokens(ok);
    for (size_t i = 0; i < size && i < 64 && !m.dead(); ++i) {
      int tok = data[i] % 3 == 0 ? 256 + data[i] % 7 : data[i];
      m.accept(tok);
      if (i % 8 == 0) m.allowed_tokens(ok);
    }
    (void)m.can_end();
  } catch (const Error&) {
  }
  return 0;
}
