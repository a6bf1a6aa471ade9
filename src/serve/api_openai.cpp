// OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (Metharme format).
#include <ctime>

#include "chat/metharme.h"
#include "serve/http.h"
#include "serve/params.h"
#include "util/error.h"

namespace metharme::serve {

namespace {

const char* openai_finish(Finish f) { return f == Finish::kLength ? "length" : "stop"; }

std::string new_id(const char* prefix) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(random_seed()));
  return std::string(prefix) + buf;
}

json model_object(const ServerState& st) {
  return {{"id", model_name(st)}, {"object", "model"}, {"created", st.created_unix}, {"owned_by", "metharme"}};
}

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
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") || !part["text"].is_string()) {
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

struct OpenAIJob {
  std::vector<std::shared_ptr<Job>> jobs;  // n of them; empty when the request failed
  int prompt_tokens = 0;
  bool stream = false, include_usage = false, echo = false, chat = false;
  std::string echo_text;
};

// Reads the fields shared by both endpoints, builds the spec and queues it; on failure the
// error reply is sent and the result has no job.
OpenAIJob start_openai(ServerState& st, const ApiRequest& req, httplib::Response& res, bool chat) {
  OpenAIJob out;
  out.chat = chat;
  Engine* e = st.engine.load();
  if (!e) {
    send_no_model(Api::kOpenAI, res);
    return out;
  }
  if (st.stopping.load()) {
    send_busy(Api::kOpenAI, res);
    return out;
  }
  if (!req.body.is_object()) {
    openai_error(res, 400, "The body must be a JSON object.", "invalid_request_error");
    return out;
  }
  const Tokenizer& tok = e->tokenizer();
  FieldErrors errs;
  FieldReader r(req.body, errs);
  CommonParams c = read_common(r, tok, tok.vocab_size());
  auto max_tokens = r.integer("max_tokens", 1, INT32_MAX);
  if (!max_tokens) max_tokens = r.integer("max_completion_tokens", 1, INT32_MAX);
  if (!max_tokens) max_tokens = r.integer("max_new_tokens", 1, INT32_MAX);
  out.stream = r.boolean("stream").value_or(false);
  if (const json* so = r.raw("stream_options"); so && so->is_object())
    out.include_usage = so->value("include_usage", false) == true;
  int n = int(r.integer("n", 1, out.stream ? 1 : 5).value_or(1));
  std::vector<int> ids;
  ChatPrompt chat_prompt;
  if (chat) {
    std::string why;
    auto p = render_chat(req.body.value("messages", json()), why);
    if (!p) errs.add("messages", why);
    else chat_prompt = *p;
    for (auto& stop : metharme_stop_strings()) c.stop.push_back(stop);
    ids = tok.encode(chat_prompt.text, true);
  } else {
    out.echo = r.boolean("echo").value_or(false);
    if (r.has("suffix")) errs.add("suffix", "suffix (insertion) is not supported.");
    const json* pr = r.raw("prompt");
    if (pr && pr->is_array() && pr->size() == 1 && ((*pr)[0].is_string() || (*pr)[0].is_array())) pr = &(*pr)[0];
    if (!pr) {
      ids = {tok.bos()};  // OpenAI's default prompt is the start of a document
    } else if (pr->is_string()) {
      ids = tok.encode(pr->get<std::string>(), true);
      out.echo_text = pr->get<std::string>();
    } else if (pr->is_array() && !pr->empty() && (*pr)[0].is_number_integer()) {
      for (const auto& v : *pr) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0 || v.get<int64_t>() >= tok.vocab_size()) {
          errs.add("prompt", "Token ids must be integers inside the vocabulary.");
          break;
        }
        ids.push_back(v.get<int>());
      }
      if (errs.empty()) out.echo_text = tok.decode(ids);
    } else {
      errs.add("prompt", "Must be a string, a list of one string, or a list of token ids.");
    }
  }
  if (!errs.empty()) {
    const auto& [field, msgs] = *errs.fields.begin();
    openai_error(res, 400, field + ": " + msgs[0], "invalid_request_error", field);
    return out;
  }
  // OpenAI semantics: the stop string is not part of the text.
  c.trim_stop = true;
  const int ctx = e->n_ctx(), P = int(ids.size());
  if (P >= ctx || (max_tokens && P + *max_tokens > ctx)) {
    std::string msg = cat("This model's maximum context length is ", ctx, " tokens. However, you requested ",
                          P + int(max_tokens.value_or(1)), " tokens (", P, " in the ", chat ? "messages" : "prompt",
                          ", ", max_tokens.value_or(1), " in the completion). Please reduce the length of the ",
                          chat ? "messages" : "prompt", " or completion.");
    openai_error(res, 400, msg, "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded");
    return out;
  }
  int max_new = int(max_tokens.value_or(std::min(chat ? 400 : st.opt.default_max_length, ctx - P)));
  std::vector<GenSpec> specs = make_specs(c, max_new, req.client, ids, n, st.opt.context_shift);
  std::vector<std::shared_ptr<Job>> jobs;
  try {
    jobs = e->submit(std::move(specs));
  } catch (const Error& err) {
    openai_error(res, 400, err.what(), "invalid_request_error");
    return out;
  }
  if (jobs.empty()) {
    send_busy(Api::kOpenAI, res);
    return out;
  }
  out.prompt_tokens = int(jobs[0]->spec().prompt.size());  // without BOS when add_bos_token is false
  out.jobs = std::move(jobs);
  return out;
}

// Strips the leading whitespace of a chat reply, also across stream chunks.
struct LeadTrim {
  bool started = false;
  std::string operator()(const std::string& s) {
    if (started) return s;
    size_t i = s.find_first_not_of(" \t\n\r");
    if (i == std::string::npos) return "";
    started = true;
    return s.substr(i);
  }
};

json usage(int prompt_tokens, int completion) {
  return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion}, {"total_tokens", prompt_tokens + completion}};
}

int completion_tokens(const Job& j) {
  JobStats s = j.stats();
  // EOS ended the text but is not part of it.
  return s.generated - (j.finish() == Finish::kEos ? 1 : 0);
}

void completions(ServerState& st, const ApiRequest& req, httplib::Response& res, bool chat) {
  OpenAIJob oj = start_openai(st, req, res, chat);
  if (oj.jobs.empty()) return;
  const std::string id = new_id(chat ? "chatcmpl-" : "cmpl-");
  const int64_t created = int64_t(std::time(nullptr));
  const std::string model = model_name(st);
  auto head = [=](const char* object) {
    return json{{"id", id}, {"object", object}, {"created", created}, {"model", model}};
  };
  if (!oj.stream) {
    follow_jobs(st, res, "application/json", oj.jobs, {nullptr, [=] {
                  json body = head(chat ? "chat.completion" : "text_completion");
                  json choices = json::array();
                  int completion = 0;
                  for (size_t i = 0; i < oj.jobs.size(); ++i) {
                    const Job& j = *oj.jobs[i];
                    std::string text = j.text();
                    json choice = {{"index", i}, {"finish_reason", openai_finish(j.finish())}, {"logprobs", nullptr}};
                    if (chat) {
                      LeadTrim trim;
                      choice["message"] = {{"role", "assistant"}, {"content", trim(text)}};
                    } else {
                      choice["text"] = oj.echo ? oj.echo_text + text : text;
                    }
                    choices.push_back(choice);
                    completion += completion_tokens(j);
                  }
                  body["choices"] = choices;
                  body["usage"] = usage(oj.prompt_tokens, completion);
                  return dump(body);
                }});
    return;
  }
  auto trim = std::make_shared<LeadTrim>();
  auto chunk = [=](const json& delta_or_text, const json& finish) {
    json c = head(chat ? "chat.completion.chunk" : "text_completion");
    json choice = {{"index", 0}, {"finish_reason", finish}};
    if (chat)
      choice["delta"] = delta_or_text;
    else
      choice["text"] = delta_or_text, choice["logprobs"] = nullptr;
    c["choices"] = json::array({choice});
    return c;
  };
  std::string opening;
  if (chat) opening = sse_event(chunk({{"role", "assistant"}, {"content", ""}}, nullptr));
  if (!chat && oj.echo) opening = sse_event(chunk(oj.echo_text, nullptr));
  auto first = std::make_shared<std::string>(opening);
  auto job = oj.jobs[0];
  follow_jobs(st, res, "text/event-stream", oj.jobs,
              {[=](const std::string& delta) {
                 std::string out;
                 out.swap(*first);
                 std::string text = chat ? (*trim)(delta) : delta;
                 if (!text.empty()) out += sse_event(chunk(chat ? json{{"content", text}} : json(text), nullptr));
                 return out;
               },
               [=] {
                 std::string out;
                 out.swap(*first);
                 out += sse_event(chunk(chat ? json::object() : json(""), openai_finish(job->finish())));
                 if (oj.include_usage) {
                   json u = head(chat ? "chat.completion.chunk" : "text_completion");
                   u["choices"] = json::array();
                   u["usage"] = usage(oj.prompt_tokens, completion_tokens(*job));
                   out += sse_event(u);
                 }
                 return out + "data: [DONE]\n\n";
               }});
}

}  // namespace

std::vector<Route> openai_routes() {
  return {
      {"GET", "/v1/models/?", false,
       [](ServerState& st, const ApiRequest&, httplib::Response& res) {
         send_json(res, 200, {{"object", "list"}, {"data", json::array({model_object(st)})}});
       }},
      {"GET", "/v1/models/(.+)", false,
       [](ServerState& st, const ApiRequest& req, httplib::Response& res) {
         std::string id = req.http.matches[1];
         if (id != model_name(st))
           return openai_error(res, 404, "The model '" + id + "' does not exist", "invalid_request_error", "model",
                               "model_not_found");
         send_json(res, 200, model_object(st));
       }},
      {"POST", "/v1/completions?/?", true,
       [](ServerState& st, const ApiRequest& req, httplib::Response& res) { completions(st, req, res, false); }},
      {"POST", "/v1/chat/completions/?", true,
       [](ServerState& st, const ApiRequest& req, httplib::Response& res) { completions(st, req, res, true); }},
  };
}

}  // namespace metharme::serve
