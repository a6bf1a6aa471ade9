#include "serve/structured.h"

#include <cstdio>

#include "grammar/gbnf.h"
#include "grammar/json_schema.h"
#include "util/error.h"

namespace metharme::serve {

namespace {

// Parses GBNF into s.grammar, or records the error on `field`.
void set_grammar(FieldReader& r, SamplerParams& s, const char* field, const std::string& gbnf) {
  try {
    s.grammar = grammar::parse_gbnf(gbnf);
  } catch (const Error& e) {
    r.error(field, e.what());
  }
}

// A token's text and bytes as the APIs show them. A byte piece that is not a whole character
// shows as "bytes:\xNN" (as OpenAI does); its bytes are the raw byte.
struct TokenText {
  std::string text;
  std::vector<int> bytes;
};

TokenText token_text(const Tokenizer& tok, int id) {
  TokenText t;
  int b = id >= 0 && id < tok.vocab_size() ? tok.byte_value(id) : -1;
  if (b >= 0x80) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "bytes:\\x%02x", unsigned(b) & 0xFFu);
    t.text = buf;
    t.bytes = {b};
    return t;
  }
  if (b >= 0)
    t.text = std::string(1, char(b));
  else if (id >= 0 && id < tok.vocab_size())
    t.text = tok.is_control(id) ? tok.piece(id) : tok.piece_text(id);
  for (unsigned char c : t.text) t.bytes.push_back(c);
  return t;
}

size_t utf8_chars(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

}  // namespace

void read_grammar(FieldReader& r, SamplerParams& s) {
  if (auto keep = r.boolean("grammar_retain_state"); keep && *keep)
    r.error("grammar_retain_state", "grammar_retain_state is not supported by this server (use false).");
  auto g = r.string("grammar", grammar::kMaxGrammarBytes);
  if (!g || g->empty()) return;
  // KoboldCpp reads a grammar that is JSON as a JSON Schema.
  size_t first = g->find_first_not_of(" \t\r\n");
  if (first != std::string::npos && (*g)[first] == '{') {
    nlohmann::json schema = nlohmann::json::parse(*g, nullptr, false);
    if (!schema.is_discarded()) {
      try {
        set_grammar(r, s, "grammar", grammar::schema_to_gbnf(schema));
      } catch (const Error& e) {
        r.error("grammar", e.what());
      }
      return;
    }
  }
  set_grammar(r, s, "grammar", *g);
}

void read_response_format(FieldReader& r, SamplerParams& s) {
  const nlohmann::json* rf = r.raw("response_format");
  if (!rf) return;
  const char* field = "response_format";
  if (!rf->is_object() || !rf->contains("type") || !(*rf)["type"].is_string())
    return r.error(field, "Must be an object with a string 'type' (text, json_object or json_schema).");
  std::string type = (*rf)["type"].get<std::string>();
  if (type == "text") return;
  if (s.grammar) return r.error(field, "response_format and grammar cannot both be given.");
  if (type == "json_object") return set_grammar(r, s, field, grammar::json_object_gbnf());
  if (type != "json_schema")
    return r.error(field, cat("Unknown type '", type, "' (text, json_object or json_schema)."));
  const nlohmann::json* js = rf->contains("json_schema") ? &(*rf)["json_schema"] : nullptr;
  if (!js || !js->is_object() || !js->contains("schema"))
    return r.error(field, "json_schema needs {\"json_schema\": {\"name\": ..., \"schema\": {...}}}.");
  try {
    set_grammar(r, s, field, grammar::schema_to_gbnf((*js)["schema"]));
  } catch (const Error& e) {
    r.error(field, e.what());
  }
}

// Log-probabilities: chat `logprobs` (bool) with `top_logprobs`; completions `logprobs` (the
// number of alternatives). They are the model's own distribution (see README).
void read_openai_logprobs(FieldReader& r, SamplerParams& s, bool chat) {
  std::optional<int64_t> top;
  if (chat) {
    bool on = r.boolean("logprobs").value_or(false);
    top = r.integer("top_logprobs", 0, kMaxTopLogprobs);
    if (top && !on && *top > 0) return r.error("top_logprobs", "top_logprobs needs logprobs: true.");
    if (!on) return;
  } else {
    const nlohmann::json* v = r.raw("logprobs");
    if (!v || (v->is_boolean() && !v->get<bool>())) return;
    top = v->is_boolean() ? 0 : r.integer("logprobs", 0, kMaxTopLogprobs);
    if (!top) return;
  }
  s.logprobs = SamplerParams::Logprobs::kModel;
  s.top_logprobs = int(top.value_or(0));
}

void read_kobold_logprobs(FieldReader& r, SamplerParams& s) {
  // Lite sends a bool, SillyTavern a count (10); KoboldCpp reads either as on/off.
  const nlohmann::json* v = r.raw("logprobs");
  if (!v) return;
  bool on = v->is_boolean() ? v->get<bool>() : v->is_number() ? v->get<double>() != 0 : false;
  if (!v->is_boolean() && !v->is_number()) return r.error("logprobs", "Not a valid boolean.");
  if (!on) return;
  s.logprobs = SamplerParams::Logprobs::kSampled;
  s.top_logprobs = kKoboldTopLogprobs;
}

nlohmann::json kobold_logprobs(const std::vector<StepLogprobs>& steps, const Tokenizer& tok) {
  nlohmann::json out = {{"content", nlohmann::json::array()},      {"tokens", nlohmann::json::array()},
                        {"token_ids", nlohmann::json::array()},    {"token_logprobs", nlohmann::json::array()},
                        {"top_logprobs", nlohmann::json::array()}, {"text_offset", nlohmann::json::array()}};
  size_t offset = 0;
  for (const StepLogprobs& st : steps) {
    TokenText t = token_text(tok, st.token);
    nlohmann::json item = {{"token", t.text}, {"token_id", st.token}, {"logprob", st.logprob}, {"bytes", t.bytes}};
    nlohmann::json tops = nlohmann::json::array(), dict = nlohmann::json::object();
    for (const auto& [id, lp] : st.top) {
      TokenText a = token_text(tok, id);
      tops.push_back({{"token", a.text}, {"token_id", id}, {"logprob", lp}, {"bytes", a.bytes}});
      dict[a.text] = lp;
    }
    item["top_logprobs"] = tops;
    out["content"].push_back(item);
    out["tokens"].push_back(t.text);
    out["token_ids"].push_back(st.token);
    out["token_logprobs"].push_back(st.logprob);
    out["top_logprobs"].push_back(dict);
    out["text_offset"].push_back(offset);
    offset += utf8_chars(t.text);
  }
  return out;
}

nlohmann::json completion_logprobs(const std::vector<StepLogprobs>& steps, const Tokenizer& tok, size_t& offset) {
  nlohmann::json out = {{"tokens", nlohmann::json::array()},
                        {"token_logprobs", nlohmann::json::array()},
                        {"top_logprobs", nlohmann::json::array()},
                        {"text_offset", nlohmann::json::array()}};
  for (const StepLogprobs& st : steps) {
    TokenText t = token_text(tok, st.token);
    nlohmann::json dict = nlohmann::json::object();
    for (const auto& [id, lp] : st.top) dict[token_text(tok, id).text] = lp;
    out["tokens"].push_back(t.text);
    out["token_logprobs"].push_back(st.logprob);
    out["top_logprobs"].push_back(dict);
    out["text_offset"].push_back(offset);
    offset += utf8_chars(t.text);
  }
  return out;
}

nlohmann::json chat_logprobs(const std::vector<StepLogprobs>& steps, const Tokenizer& tok) {
  nlohmann::json content = nlohmann::json::array();
  for (const StepLogprobs& st : steps) {
    TokenText t = token_text(tok, st.token);
    nlohmann::json tops = nlohmann::json::array();
    for (const auto& [id, lp] : st.top) {
      TokenText a = token_text(tok, id);
      tops.push_back({{"token", a.text}, {"logprob", lp}, {"bytes", a.bytes}});
    }
    content.push_back({{"token", t.text}, {"logprob", st.logprob}, {"bytes", t.bytes}, {"top_logprobs", tops}});
  }
  return {{"content", content}, {"refusal", nullptr}};
}

}  // namespace metharme::serve
