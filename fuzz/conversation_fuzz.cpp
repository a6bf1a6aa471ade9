// A saved chat conversation (metharme chat --load), and its round trip when it reads.
#include "chat/conversation.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace metharme;
  try {
    Conversation c = conversation_from_json(std::string_view(reinterpret_cast<const char*>(data), size), "chat.json");
    Conversation again = conversation_from_json(conversation_to_json(c), "round trip");
    if (again.messages.size() != c.messages.size()) __builtin_trap();
  } catch (const Error&) {
  }
  return 0;
}
