// OpenAI-compatible routes: /v1/models, /v1/completions, /v1/chat/completions (Metharme format).
#include <ctime>
#include <optional>

#include "chat/metharme.h"
#include "serve/context_fit.h"
#include "serve/http.h"
#include "serve/openai_params.h"
#include "serve/params.h"
#include "serve/structured.h"
#include "util/error.h"

namespace metharme::serve {

namespace {

const char* openai_finish(Finish f) { return f == Finish::kLength ? "length" : "stop"; }

size_t utf8_length(const std::string& s) {
  size_t n = 0;
  for (unsigned char c : s) n += (c & 0xC0) != 0x80;
  return n;
}

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
  int prompt_tokens_cut = 0, messages_dropped = 0;  // how the prompt was fitted (context_fit.h)
  bool stream = false, include_usage = false, echo = false, chat = false;
  bool logprobs = false;  // the choices carry log-probabilities
  std::string echo_text;
  const Tokenizer* tok = nullptr;
};

// Fits the prompt (op.ids, or for chat op.msgs) beside a reply of max_new tokens into ctx
// (context_fit.h) and records what was cut in `out`. False (and the error sent) only when the
// context has no room for any prompt.
bool fit_prompt(const Tokenizer& tok, int ctx, int max_new, OpenAIParams& op, OpenAIJob& out, httplib::Response& res) {
  if (!reply_fits(max_new, ctx)) {
    openai_error(res, 400,
                 cat("The context of ", ctx, " tokens has no room for a prompt beside a reply of ", max_new,
                     " tokens (KoboldCpp's clamp); ask for a context of at least 5 tokens."),
                 "invalid_request_error", "max_tokens", "context_length_exceeded");
    return false;
  }
  const int room = ctx - max_new;
  if (out.chat && int(op.ids.size()) > room) {
    ChatFit fit = fit_chat(tok, op.msgs, !op.continues, room);
    op.ids = std::move(fit.ids);
    out.prompt_tokens_cut = fit.tokens_cut;
    out.messages_dropped = fit.messages_dropped;
  } else {
    out.prompt_tokens_cut = cut_front(op.ids, room, tok.bos());
  }
  return true;
}

// Reads the fields shared by both endpoints, builds the spec and queues it; on failure the
// error reply is sent and the result has no job.
// Bytes of prompt text a body carries (completions: `prompt` as a string or strings; chat: the
// text of every message), counted before anything is tokenized.
size_t openai_prompt_bytes(const json& body, bool chat) {
  size_t n = 0;
  auto add = [&](const json& v) {
    if (v.is_string()) n += v.get_ref<const std::string&>().size();
    if (v.is_array())
      for (const auto& part : v) {
        if (part.is_string()) n += part.get_ref<const std::string&>().size();
        if (part.is_object() && part.contains("text") && part["text"].is_string())
          n += part["text"].get_ref<const std::string&>().size();
      }
  };
  if (!body.is_object()) return 0;
  if (!chat) {
    if (auto it = body.find("prompt"); it != body.end()) add(*it);
  } else if (auto it = body.find("messages"); it != body.end() && it->is_array()) {
    for (const auto& m : *it)
      if (m.is_object() && m.contains("content")) add(m["content"]);
  }
  return n;
}

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
  // Tokenizing takes time and memory in proportion to the text: bound it before it starts.
  const size_t bytes = openai_prompt_bytes(req.body, chat);
  if (const size_t limit = prompt_byte_limit(st.opt); bytes > limit) {
    const char* field = chat ? "messages" : "prompt";
    openai_error(res, 413,
                 cat(field, ": ", bytes, " bytes of prompt text are above this server's limit of ", limit,
                     " bytes (--max-prompt-bytes)"),
                 "invalid_request_error", field);
    return out;
  }
  std::optional<TokenizeTurn> turn(std::in_place, st, bytes);
  OpenAIParams op = read_openai(req.body, e->tokenizer(), chat, errs);
  CommonParams& c = op.common;
  const std::optional<int64_t>& max_tokens = op.max_tokens;
  std::vector<int>& ids = op.ids;
  const int n = op.n;
  out.stream = op.stream;
  out.include_usage = op.include_usage;
  out.echo = op.echo;
  out.echo_text = op.echo_text;
  out.logprobs = c.sampler.logprobs != SamplerParams::Logprobs::kOff;
  out.tok = &e->tokenizer();
  if (!errs.empty()) {
    // A grammar that does not parse is a 422 (Unprocessable), other bad fields a 400.
    for (const char* f : {"grammar", "response_format"})
      if (errs.fields.count(f))
        return openai_error(res, 422, errs.fields[f][0], "invalid_request_error", f), out;
    const auto& [field, msgs] = *errs.fields.begin();
    openai_error(res, 400, field + ": " + msgs[0], "invalid_request_error", field);
    return out;
  }
  // OpenAI semantics: the stop string is not part of the text.
  c.trim_stop = true;
  // KoboldCpp's defaults (180 / 400) and clamp for the reply.
  const int ctx = std::min(op.context, e->n_ctx());
  const int max_new = clamp_max_length(int(max_tokens.value_or(chat ? 400 : st.opt.default_max_length)), ctx);
  if (!fit_prompt(e->tokenizer(), ctx, max_new, op, out, res)) return out;
  turn.reset();
  std::vector<GenSpec> specs = make_specs(c, max_new, req.client, ids, n, st.opt.context_shift);
  for (GenSpec& g : specs) g.prompt_tokens_cut = out.prompt_tokens_cut;
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
  set_prompt_cut_header(res, out.prompt_tokens_cut, chat ? out.messages_dropped : -1);
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
                    if (oj.logprobs) {
                      size_t offset = oj.echo ? utf8_length(oj.echo_text) : 0;
                      choice["logprobs"] = chat ? chat_logprobs(j.logprobs_from(0), *oj.tok)
                                                : completion_logprobs(j.logprobs_from(0), *oj.tok, offset);
                    }
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
                  body["prompt_tokens_cut"] = oj.prompt_tokens_cut;
                  if (chat) body["messages_dropped"] = oj.messages_dropped;
                  return dump(body);
                }},
                Api::kOpenAI);
    return;
  }
  auto trim = std::make_shared<LeadTrim>();
  auto lp_sent = std::make_shared<size_t>(0);
  auto lp_offset = std::make_shared<size_t>(oj.echo ? utf8_length(oj.echo_text) : 0);
  auto job0 = oj.jobs[0];
  // The log-probabilities of the tokens published since the last chunk (null when not asked).
  auto fresh_logprobs = [=]() -> json {
    if (!oj.logprobs) return nullptr;
    std::vector<StepLogprobs> lps = job0->logprobs_from(*lp_sent);
    *lp_sent += lps.size();
    if (lps.empty()) return nullptr;
    return chat ? chat_logprobs(lps, *oj.tok) : completion_logprobs(lps, *oj.tok, *lp_offset);
  };
  auto chunk = [=](const json& delta_or_text, const json& finish, const json& logprobs = nullptr) {
    json c = head(chat ? "chat.completion.chunk" : "text_completion");
    json choice = {{"index", 0}, {"finish_reason", finish}, {"logprobs", logprobs}};
    if (chat)
      choice["delta"] = delta_or_text;
    else
      choice["text"] = delta_or_text;
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
                 json lps = fresh_logprobs();
                 if (!text.empty() || !lps.is_null())
                   out += sse_event(chunk(chat ? json{{"content", text}} : json(text), nullptr, lps));
                 return out;
               },
               [=] {
                 std::string out;
                 out.swap(*first);
                 if (job->finish() == Finish::kError) {
                   // Failed after streaming began: OpenAI's error object as the last event.
                   json err = {{"message", "Generation failed: " + job->error()},
                               {"type", job->error_status() == 422 ? "invalid_request_error" : "server_error"},
                               {"param", nullptr},
                               {"code", job->error_status()}};
                   return out + sse_event({{"error", err}}) + "data: [DONE]\n\n";
                 }
                 json lps = fresh_logprobs();
                 if (!lps.is_null()) out += sse_event(chunk(chat ? json{{"content", ""}} : json(""), nullptr, lps));
                 out += sse_event(chunk(chat ? json::object() : json(""), openai_finish(job->finish())));
                 if (oj.include_usage) {
                   json u = head(chat ? "chat.completion.chunk" : "text_completion");
                   u["choices"] = json::array();
                   u["usage"] = usage(oj.prompt_tokens, completion_tokens(*job));
                   out += sse_event(u);
                 }
                 return out + "data: [DONE]\n\n";
               }},
              Api::kOpenAI);
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
