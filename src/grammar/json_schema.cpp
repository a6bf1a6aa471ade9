#include "grammar/json_schema.h"

#include <map>
#include <set>

#include "util/error.h"

namespace metharme::grammar {

namespace {

// The shared JSON rules; "value" is any JSON value.
const char* kJsonRules = R"(value ::= object | array | string | number | "true" | "false" | "null"
object ::= "{" ws ( string ws ":" ws value ws ( "," ws string ws ":" ws value ws )* )? "}"
array ::= "[" ws ( value ws ( "," ws value ws )* )? "]"
string ::= "\"" char* "\""
char ::= [^"\\\x00-\x1f] | "\\" ( ["\\/bfnrt] | "u" [0-9a-fA-F]{4} )
number ::= integer ( "." [0-9]+ )? ( [eE] [-+]? [0-9]+ )?
integer ::= "-"? ( "0" | [1-9] [0-9]{0,15} )
boolean ::= "true" | "false"
null ::= "null"
ws ::= [ \t\n]{0,20}
)";

constexpr int kMaxSchemaDepth = 32;

// A GBNF string literal for the given UTF-8 text.
std::string literal(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += char(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02X", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  return out + "\"";
}

class Converter {
 public:
  std::string run(const nlohmann::json& schema) {
    std::string root = visit(schema, "$", 0);
    std::string out = "root ::= " + root + "\n";
    for (const auto& [name, body] : rules_) out += name + " ::= " + body + "\n";
    return out + kJsonRules;
  }

 private:
  std::string new_rule(const std::string& body) {
    std::string name = cat("s", rules_.size());
    rules_[name] = body;
    return name;
  }

  static void refuse(const std::string& key, const std::string& where) {
    fail("json_schema: '", key, "' at ", where, " is not supported");
  }

  std::string visit(const nlohmann::json& s, const std::string& where, int depth) {
    if (depth > kMaxSchemaDepth) fail("json_schema: nested deeper than ", kMaxSchemaDepth, " at ", where);
    if (s.is_boolean()) {
      if (s.get<bool>()) return "value";
      fail("json_schema: the schema 'false' at ", where, " accepts nothing");
    }
    if (!s.is_object()) fail("json_schema: the schema at ", where, " must be an object");
    static const std::set<std::string> known = {"type",      "properties", "required",    "additionalProperties",
                                                "items",     "minItems",   "maxItems",    "minLength",
                                                "maxLength", "enum",       "const",       "anyOf",
                                                "oneOf",     "title",      "description", "default",
                                                "examples",  "$schema",    "$id",         "$comment"};
    for (auto it = s.begin(); it != s.end(); ++it)
      if (!known.count(it.key())) refuse(it.key(), where);
    if (s.contains("const")) return literal(s["const"].dump());
    if (s.contains("enum")) {
      if (!s["enum"].is_array() || s["enum"].empty())
        fail("json_schema: 'enum' at ", where, " must be a non-empty list");
      std::string alts;
      for (const auto& v : s["enum"]) alts += (alts.empty() ? "" : " | ") + literal(v.dump());
      return "(" + alts + ")";
    }
    for (const char* key : {"anyOf", "oneOf"})
      if (s.contains(key)) {
        const auto& list = s[key];
        if (!list.is_array() || list.empty()) fail("json_schema: '", key, "' at ", where, " must be a non-empty list");
        std::string alts;
        for (size_t i = 0; i < list.size(); ++i)
          alts += (i ? " | " : "") + visit(list[i], cat(where, ".", key, "[", i, "]"), depth + 1);
        return "(" + alts + ")";
      }
    if (!s.contains("type")) {
      for (const char* key : {"properties", "items"})
        if (s.contains(key)) return typed(s, key[0] == 'p' ? "object" : "array", where, depth);
      return "value";
    }
    const auto& t = s["type"];
    if (t.is_string()) return typed(s, t.get<std::string>(), where, depth);
    if (!t.is_array() || t.empty()) fail("json_schema: 'type' at ", where, " must be a string or a list of strings");
    std::string alts;
    for (const auto& one : t) {
      if (!one.is_string()) fail("json_schema: 'type' at ", where, " must be a string or a list of strings");
      alts += (alts.empty() ? "" : " | ") + typed(s, one.get<std::string>(), where, depth);
    }
    return "(" + alts + ")";
  }

  static std::string bounds(const nlohmann::json& s, const char* lo_key, const char* hi_key, const std::string& where) {
    auto get = [&](const char* k) -> long {
      if (!s.contains(k)) return -1;
      if (!s[k].is_number_integer() || s[k].get<int64_t>() < 0 || s[k].get<int64_t>() > 1000)
        fail("json_schema: '", k, "' at ", where, " must be an integer from 0 to 1000");
      return long(s[k].get<int64_t>());
    };
    long lo = get(lo_key), hi = get(hi_key);
    if (lo < 0 && hi < 0) return "";
    if (hi >= 0 && lo > hi) fail("json_schema: '", lo_key, "' exceeds '", hi_key, "' at ", where);
    return cat("{", lo < 0 ? 0 : lo, ",", hi < 0 ? std::string() : std::to_string(hi), "}");
  }

  std::string typed(const nlohmann::json& s, const std::string& type, const std::string& where, int depth) {
    if (type == "string") {
      std::string b = bounds(s, "minLength", "maxLength", where);
      return b.empty() ? "string" : "\"\\\"\" char" + b + " \"\\\"\"";
    }
    if (type == "number" || type == "integer" || type == "boolean" || type == "null") return type;
    if (type == "array") {
      std::string item = s.contains("items") ? visit(s["items"], where + ".items", depth + 1) : "value";
      std::string b = bounds(s, "minItems", "maxItems", where);
      if (b.empty()) return new_rule("\"[\" ws ( " + item + " ws ( \",\" ws " + item + " ws )* )? \"]\"");
      // {m,n} items joined by commas: the first, then m-1..n-1 more.
      long lo = s.value("minItems", 0L), hi = s.contains("maxItems") ? s["maxItems"].get<long>() : -1;
      if (hi == 0) return "\"[\" ws \"]\"";
      std::string more = cat("( \",\" ws ", item, " ws ){", lo > 0 ? lo - 1 : 0, ",",
                             hi < 0 ? std::string() : std::to_string(hi - 1), "}");
      std::string body = "\"[\" ws " + item + " ws " + more + " \"]\"";
      if (lo == 0) body = "\"[\" ws ( " + item + " ws " + more + " )? \"]\"";
      return new_rule(body);
    }
    if (type == "object") return object(s, where, depth);
    fail("json_schema: unknown type '", type, "' at ", where);
  }

  std::string object(const nlohmann::json& s, const std::string& where, int depth) {
    if (s.contains("additionalProperties") && s["additionalProperties"] != false)
      refuse("additionalProperties (other than false)", where);
    if (!s.contains("properties")) return "object";
    const auto& props = s["properties"];
    if (!props.is_object()) fail("json_schema: 'properties' at ", where, " must be an object");
    std::set<std::string> required;
    if (s.contains("required")) {
      if (!s["required"].is_array()) fail("json_schema: 'required' at ", where, " must be a list");
      for (const auto& r : s["required"]) {
        if (!r.is_string() || !props.contains(r.get<std::string>()))
          fail("json_schema: 'required' at ", where, " names ", r.dump(), ", which is not in 'properties'");
        required.insert(r.get<std::string>());
      }
    }
    std::vector<std::pair<std::string, bool>> kv;  // rule for "key": value, required
    for (auto it = props.begin(); it != props.end(); ++it) {
      std::string value = visit(it.value(), where + ".properties." + it.key(), depth + 1);
      kv.push_back({literal(nlohmann::json(it.key()).dump()) + " ws \":\" ws " + value, required.count(it.key()) > 0});
    }
    // tail(i, first): the properties from i on, in order; optional ones may be left out.
    std::vector<std::string> tails(2 * kv.size() + 2);
    for (size_t i = kv.size() + 1; i-- > 0;)
      for (int first = 0; first < 2; ++first) {
        std::string& out = tails[2 * i + size_t(first)];
        if (i == kv.size()) {
          out = "\"\"";
          continue;
        }
        std::string here = std::string(first ? "" : "\",\" ws ") + kv[i].first + " ws " + tails[2 * (i + 1)];
        out = kv[i].second ? new_rule(here) : new_rule("( " + here + " ) | " + tails[2 * (i + 1) + size_t(first)]);
      }
    return new_rule("\"{\" ws " + tails[1] + " \"}\"");
  }

  std::map<std::string, std::string> rules_;
};

}  // namespace

std::string json_object_gbnf() { return std::string("root ::= object\n") + kJsonRules; }

std::string schema_to_gbnf(const nlohmann::json& schema) { return Converter().run(schema); }

}  // namespace metharme::grammar
