// Untrusted text into the tokenizer (any bytes, invalid UTF-8 included), and the ids back out
// through decode and the streaming decoder, which must agree.
#include <string>

#include "tokenizer/tokenizer.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  static const Tokenizer tok(METHARME_REPO "/models/stories260k/tokenizer.model");
  std::string_view text(reinterpret_cast<const char*>(data), size);
  std::vector<int> ids = tok.encode(text, size % 2 == 0);
  std::string whole = tok.decode(ids);
  StreamDecoder dec(tok);
  std::string streamed;
  for (int id : ids) streamed += dec.push(id);
  streamed += dec.flush();
  if (streamed != whole) __builtin_trap();
  // Raw bytes as ids (any int, in or out of the vocabulary) must be refused or decoded, never crash.
  std::vector<int> raw;
  for (size_t i = 0; i + 2 <= size && raw.size() < 64; i += 2) raw.push_back(int(data[i]) << 8 | data[i + 1]);
  try {
    tok.decode(raw);
  } catch (const Error&) {
  }
  return 0;
}
