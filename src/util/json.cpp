#include "util/json.h"

#include "util/error.h"

namespace metharme {

std::string json_error_text(const nlohmann::json::exception& e) {
  std::string s = e.what();
  if (s.rfind("[json.exception.", 0) == 0) {
    size_t close = s.find("] ");
    if (close != std::string::npos) s.erase(0, close + 2);
  }
  return s;
}

namespace {
template <class J>
J parse_as(std::string_view text, const std::string& origin) {
  try {
    return J::parse(text);
  } catch (const nlohmann::json::out_of_range& e) {  // 406: a number overflows a double
    fail(origin, ": not valid JSON: ", json_error_text(e), " (the number is out of range)");
  } catch (const nlohmann::json::exception& e) {
    fail(origin, ": not valid JSON: ", json_error_text(e));
  }
}
}  // namespace

nlohmann::json parse_json(std::string_view text, const std::string& origin) {
  return parse_as<nlohmann::json>(text, origin);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& origin) {
  return parse_as<nlohmann::ordered_json>(text, origin);
}

}  // namespace metharme
