#include "serve/openai_params.h"

#include "chat/metharme.h"
#include "util/error.h"

namespace metharme::serve {

namespace {

// A chat as a Metharme prompt (chat/metharme.h), ending with <|model|> for the reply unless the
// last message is the model's own start, which is then continued.
struct ChatPrompt {
  std::string text;
  bool continues = false;
};

// Content as a string, or a list of {"type":"text","text":...} parts; other parts are refused.
std::optional<std::string> content_text(const json& c, std::string& why) {
  if (c.is_null()) return std::string();
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array()) {
    std::string out;
    for (const auto& part : c) {
      // Compared as JSON values: json::value("type", "") would throw on a non-string type.
      if (!part.is_object() || !part.contains("type") || part["type"] != "text" || !part.contains("text") ||
          !part["text"].is_string()) {
        why = "only text content parts are supported";
        return std::nullopt;
      }
      out += part["text"].get<std::string>();
    }
    return out;
  }
  why = "content must be a string or a list of text parts";
  return std::nullopt;
}

std::optional<ChatPrompt> render_chat(const json& messages, std::string& why) {
  if (!messages.is_array() || messages.empty()) {
    why = "messages must be a non-empty list";
    return std::nullopt;
  }
  std::vector<Message> msgs;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string()) {
      why = cat("messages[", i, "] needs a string role");
      return std::nullopt;
    }
    std::string name = m["role"].get<std::string>();
    auto role = name == "developer" ? std::optional<Role>(Role::kSystem) : parse_role(name);
    if (!role) {
      why = cat("messages[", i, "]: unknown role '", name, "' (system, user or assistant)");
      return std::nullopt;
    }
    auto text = content_text(m.value("content", json()), why);
    if (!text) {
      why = cat("messages[", i, "]: ", why);
      return std::nullopt;
    }
    msgs.push_back({*role, *text});
  }
  ChatPrompt p;
  p.continues = msgs.back().role == Role::kModel;
  p.text = render_messages(msgs, !p.continues);
  return p;
}

}  // namespace

OpenAIParams read_openai(const json& body, const Tokenizer& tok, bool chat, FieldErrors& errs) {
  OpenAIParams o;
  if (!body.is_object()) {
    errs.add("_schema", "The body must be a JSON object.");
    return o;
  }
  FieldReader r(body, errs);
  o.common = read_common(r, tok, tok.vocab_size());
  CommonParams& c = o.common;
  o.max_tokens = r.integer("max_tokens", 1, INT32_MAX);
  if (!o.max_tokens) o.max_tokens = r.integer("max_completion_tokens", 1, INT32_MAX);
  if (!o.max_tokens) o.max_tokens = r.integer("max_new_tokens", 1, INT32_MAX);
  o.stream = r.boolean("stream").value_or(false);
  if (const json* so = r.raw("stream_options"); so && so->is_object())
    o.include_usage = so->contains("include_usage") && (*so)["include_usage"] == true;
  o.n = int(r.integer("n", 1, o.stream ? 1 : 5).value_or(1));
  std::vector<int>& ids = o.ids;
  ChatPrompt chat_prompt;
  if (chat) {
    std::string why;
    auto p = render_chat(body.value("messages", json()), why);
    if (!p)
      errs.add("messages", why);
    else
      chat_prompt = *p;
    for (auto& stop : metharme_stop_strings()) c.stop.push_back(stop);
    ids = tok.encode(chat_prompt.text, true);
  } else {
    o.echo = r.boolean("echo").value_or(false);
    if (r.has("suffix")) errs.add("suffix", "suffix (insertion) is not supported.");
    const json* pr = r.raw("prompt");
    if (pr && pr->is_array() && pr->size() == 1 && ((*pr)[0].is_string() || (*pr)[0].is_array())) pr = &(*pr)[0];
    if (!pr) {
      ids = {tok.bos()};  // OpenAI's default prompt is the start of a document
    } else if (pr->is_string()) {
      ids = tok.encode(pr->get<std::string>(), true);
      o.echo_text = pr->get<std::string>();
    } else if (pr->is_array() && !pr->empty() && (*pr)[0].is_number_integer()) {
      for (const auto& v : *pr) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tok.vocab_size()) {
          errs.add("prompt", "Token ids must be integers inside the vocabulary.");
          break;
        }
        ids.push_back(v.get<int>());
      }
      if (errs.empty()) o.echo_text = tok.decode(ids);
    } else {
      errs.add("prompt", "Must be a string, a list of one string, or a list of token ids.");
    }
  }
  return o;
}

}  // namespace metharme::serve
