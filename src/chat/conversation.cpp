#include "chat/conversation.h"

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/fs.h"
#include "util/json.h"

namespace metharme {

using json = nlohmann::json;

namespace {
constexpr const char* kFormat = "metharme-chat";
constexpr int kVersion = 1;

std::string get_string(const json& j, const char* key, const std::string& where) {
  if (!j.contains(key)) return "";
  if (!j[key].is_string()) fail(where, ": \"", key, "\" must be a string");
  return j[key].get<std::string>();
}
}  // namespace

std::string conversation_to_json(const Conversation& c) {
  nlohmann::ordered_json msgs = nlohmann::ordered_json::array();
  for (const Message& m : c.messages) msgs.push_back({{"role", role_name(m.role)}, {"text", m.text}});
  nlohmann::ordered_json j = {{"format", kFormat}, {"version", kVersion}, {"system", c.system}, {"memory", c.memory}, {"messages", msgs}};
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Conversation conversation_from_json(std::string_view text, const std::string& origin) {
  const json j = parse_json(text, origin);
  if (!j.is_object()) fail(origin, ": expected a JSON object with \"messages\"");
  for (const auto& [key, value] : j.items())
    if (key != "format" && key != "version" && key != "system" && key != "memory" && key != "messages")
      fail(origin, ": unknown field \"", key, "\"");
  if (j.contains("format") && j["format"] != kFormat) fail(origin, ": \"format\" must be \"", kFormat, "\"");
  if (j.contains("version") && j["version"] != kVersion)
    fail(origin, ": unsupported version ", j["version"].dump(), " (this build reads version ", kVersion, ")");
  Conversation c;
  c.system = get_string(j, "system", origin);
  c.memory = get_string(j, "memory", origin);
  if (!j.contains("messages")) fail(origin, ": missing \"messages\"");
  if (!j["messages"].is_array()) fail(origin, ": \"messages\" must be an array");
  size_t i = 0;
  for (const json& m : j["messages"]) {
    std::string where = cat(origin, ": message ", i++);
    if (!m.is_object()) fail(where, " must be an object with \"role\" and \"text\"");
    for (const auto& [key, value] : m.items())
      if (key != "role" && key != "text") fail(where, ": unknown field \"", key, "\"");
    if (!m.contains("role") || !m.contains("text")) fail(where, " needs both \"role\" and \"text\"");
    auto role = parse_role(get_string(m, "role", where));
    if (!role) fail(where, ": role must be \"system\", \"user\" or \"model\" (got ", m["role"].dump(), ")");
    c.messages.push_back({*role, get_string(m, "text", where)});
  }
  return c;
}

void save_conversation(const std::string& path, const Conversation& c) { write_file_atomic(path, conversation_to_json(c)); }

Conversation load_conversation(const std::string& path) { return conversation_from_json(read_text_file(path), path); }

}  // namespace metharme
