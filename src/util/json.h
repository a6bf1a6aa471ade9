// JSON text from files and other untrusted sources, parsed with errors that name the source.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace metharme {

// Parses `text`; any failure (bad syntax, a number such as 1e400 that does not fit a double,
// invalid UTF-8) throws Error "<origin>: not valid JSON: <what and where>".
nlohmann::json parse_json(std::string_view text, const std::string& origin);
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& origin);

// nlohmann's message without its "[json.exception.parse_error.101] " prefix.
std::string json_error_text(const nlohmann::json::exception& e);

}  // namespace metharme
