#include "chat/metharme.h"

#include <algorithm>

namespace metharme {

const char* role_marker(Role r) {
  switch (r) {
    case Role::kSystem: return "<|system|>";
    case Role::kUser: return "<|user|>";
    case Role::kModel: return "<|model|>";
  }
  return "";
}

const char* role_name(Role r) {
  switch (r) {
    case Role::kSystem: return "system";
    case Role::kUser: return "user";
    case Role::kModel: return "model";
  }
  return "";
}

std::optional<Role> parse_role(std::string_view name) {
  if (name == "system") return Role::kSystem;
  if (name == "user") return Role::kUser;
  if (name == "model" || name == "assistant") return Role::kModel;
  return std::nullopt;
}

std::vector<std::string> metharme_stop_strings() { return {"<|user|>", "<|model|>", "<|system|>"}; }

std::string render_header(std::string_view system, std::string_view memory) {
  std::string s;
  if (!system.empty()) {
    s += role_marker(Role::kSystem);
    s += system;
  }
  s += memory;
  return s;
}

std::string render_messages(const std::vector<Message>& msgs, bool open_model_turn) {
  std::string s;
  for (const Message& m : msgs) {
    s += role_marker(m.role);
    s += m.text;
  }
  if (open_model_turn) s += role_marker(Role::kModel);
  return s;
}

std::vector<int> encode_continuation(const Tokenizer& tok, std::string_view text) {
  // A newline is a byte-fallback piece that merges with nothing: encode it in front and drop it.
  static const std::string kNl = "\n";
  std::vector<int> head = tok.encode(kNl, false);
  std::vector<int> ids = tok.encode(kNl + std::string(text), false);
  if (ids.size() >= head.size() && std::equal(head.begin(), head.end(), ids.begin()))
    return std::vector<int>(ids.begin() + std::ptrdiff_t(head.size()), ids.end());
  return tok.encode(text, false);  // a tokenizer without that property: accept the extra space
}

std::string render_prompt(std::string_view system, std::string_view memory, const std::vector<Message>& msgs,
                          bool open_model_turn) {
  return render_header(system, memory) + render_messages(msgs, open_model_turn);
}

}  // namespace metharme
