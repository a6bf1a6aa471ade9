// OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (Metharme format).
#include <ctime>

#include "chat/metharme.h"
#include "serve/http.h"
#include "serve/openai_params.h"
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
  FieldErrors errs;
  OpenAIParams op = read_openai(req.body, e->tokenizer(), chat, errs);
  CommonParams& c = op.common;
  const std::optional<int64_t>& max_tokens = op.max_tokens;
  const std::vector<int>& ids = op.ids;
  const int n = op.n;
  out.stream = op.stream;
  out.include_usage = op.include_usage;
  out.echo = op.echo;
  out.echo_text = op.echo_text;
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
