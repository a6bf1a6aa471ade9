// A chat conversation and its file form (JSON), for /save and /load.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "chat/metharme.h"

namespace metharme {

// Everything that was said, oldest first. The context window decides which of it the model
// sees; nothing is deleted when old turns scroll out of the window.
struct Conversation {
  std::string system;  // pinned system prompt ("" = no system turn)
  std::string memory;  // pinned raw text after the system prompt
  std::vector<Message> messages;
  bool operator==(const Conversation&) const = default;
};

// File form:
//   {"format": "metharme-chat", "version": 1, "system": "...", "memory": "...",
//    "messages": [{"role": "user", "text": "..."}, {"role": "model", "text": "..."}]}
// Roles are "system", "user" and "model" ("assistant" is read as "model").
std::string conversation_to_json(const Conversation& c);
// Throws Error naming `origin` and the problem (malformed JSON, unknown field, wrong type, role).
Conversation conversation_from_json(std::string_view text, const std::string& origin);

void save_conversation(const std::string& path, const Conversation& c);  // atomic: temp + rename
Conversation load_conversation(const std::string& path);

}  // namespace metharme
