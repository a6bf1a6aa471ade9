// JSON as GBNF: the grammar of any JSON object (OpenAI's response_format json_object) and a
// converter from a subset of JSON Schema (response_format json_schema, KoboldCpp's JSON grammar).
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace metharme::grammar {

// One JSON object, with at most 20 whitespace characters between tokens.
std::string json_object_gbnf();

// GBNF for the documents a schema accepts. Supported: type (one or a list) of object,
// properties, required, additionalProperties (false only), array, items, minItems, maxItems,
// string, minLength, maxLength, number, integer, boolean, null; enum, const, anyOf, oneOf; the
// empty schema (any value). Annotations (title, description, default, examples, $schema, $id,
// $comment) are ignored. Any other keyword throws Error naming it and where it is.
std::string schema_to_gbnf(const nlohmann::json& schema);

}  // namespace metharme::grammar
