// KoboldCpp's instruct placeholders: clients (KoboldAI Lite with automatic instruct tags, and
// many scripts copied from its requests) write {{[SYSTEM]}}, {{[INPUT]}}, {{[OUTPUT]}} and their
// {{[..._END]}} forms and let the server fill in its model's format. Here that format is
// Metharme: <|system|>, <|user|>, <|model|>, and nothing for the ends. KoboldCpp applies this
// unless a request sets replace_instruct_placeholders to false.
#pragma once

#include <string>
#include <vector>

namespace metharme::serve {

// Every placeholder in `text` replaced by its Metharme marker (ends by nothing).
std::string fill_instruct_placeholders(std::string text);

// Stop strings that are exactly a placeholder: a start becomes its marker, an end is dropped
// (Metharme has no end markers). Other stop strings are kept as they are.
std::vector<std::string> fill_placeholder_stops(const std::vector<std::string>& stops);

}  // namespace metharme::serve
