#include "serve/placeholders.h"

#include <string_view>
#include <utility>

#include "chat/metharme.h"

namespace metharme::serve {

namespace {

struct Placeholder {
  std::string_view tag;
  const char* marker;  // "" for the end tags
};

const Placeholder kPlaceholders[] = {
    {"{{[SYSTEM]}}", role_marker(Role::kSystem)},
    {"{{[INPUT]}}", role_marker(Role::kUser)},
    {"{{[OUTPUT]}}", role_marker(Role::kModel)},
    {"{{[SYSTEM_END]}}", ""},
    {"{{[INPUT_END]}}", ""},
    {"{{[OUTPUT_END]}}", ""},
};

}  // namespace

std::string fill_instruct_placeholders(std::string text) {
  if (text.find("{{[") == std::string::npos) return text;
  std::string out;
  out.reserve(text.size());
  size_t i = 0;
  while (i < text.size()) {
    bool hit = false;
    if (text.compare(i, 3, "{{[") == 0) {
      for (const Placeholder& p : kPlaceholders) {
        if (text.compare(i, p.tag.size(), p.tag) == 0) {
          out += p.marker;
          i += p.tag.size();
          hit = true;
          break;
        }
      }
    }
    if (!hit) out.push_back(text[i++]);
  }
  return out;
}

std::vector<std::string> fill_placeholder_stops(const std::vector<std::string>& stops) {
  std::vector<std::string> out;
  for (const std::string& s : stops) {
    std::string filled = s;
    for (const Placeholder& p : kPlaceholders)
      if (s == p.tag) filled = p.marker;
    if (!filled.empty()) out.push_back(std::move(filled));
  }
  return out;
}

}  // namespace metharme::serve
