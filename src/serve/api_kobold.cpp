// KoboldAI United (/api/v1, /api/latest) and KoboldCpp (/api/extra) routes.
#include <chrono>

#include "serve/context_fit.h"
#include "serve/http.h"
#include "serve/params.h"
#include "serve/structured.h"
#include "util/error.h"

namespace metharme::serve {

namespace {

constexpr const char* kUnitedVersion = "1.2.5";    // the KoboldAI API version KoboldCpp reports
// The KoboldCpp release whose client-visible features we match. Clients gate features on it:
// Lite v339 shows Mirostat and grammar from 1.37/1.44, sends memory and trim_stop from 1.49, DRY
// from 1.70, XTC from 1.74, and from 1.88 writes {{[INPUT]}}-style instruct placeholders for the
// server to fill (placeholders.h), so its instruct mode gets the Metharme markers (SillyTavern
// 1.12 only checks for KoboldCpp itself). Every other gate below 1.102 also needs a flag of
// /api/extra/version that we leave off (multiplayer, websearch, tts, admin, savedata, embeddings,
// guidance); 1.102 would show a link to a llama.cpp UI we do not have.
constexpr const char* kKoboldCppVersion = "1.88";

// KoboldCpp reports "stop" for a natural end, "length" otherwise.
const char* kobold_finish(Finish f) {
  switch (f) {
    case Finish::kEos:
    case Finish::kStop: return "stop";
    case Finish::kAbort: return "abort";
    default: return "length";
  }
}

// KoboldCpp's stop_reason enum in /api/extra/perf.
int kobold_stop_reason(Finish f) {
  switch (f) {
    case Finish::kNone: return -1;
    case Finish::kEos: return 1;
    case Finish::kStop: return 2;
    default: return 0;
  }
}

Engine* ready(ServerState& st, Api api, httplib::Response& res) {
  Engine* e = st.engine.load();
  if (!e) {
    send_no_model(api, res);
    return nullptr;
  }
  if (st.stopping.load()) {
    send_busy(api, res);
    return nullptr;
  }
  return e;
}

void value(httplib::Response& res, const json& v) { send_json(res, 200, {{"value", v}}); }

// Validates a Kobold generate body and queues its jobs; on failure the error is already sent.
std::vector<std::shared_ptr<Job>> start_kobold(ServerState& st, Engine& e, const ApiRequest& req, httplib::Response& res,
                                               KoboldParams& p, bool stream) {
  const Tokenizer& tok = e.tokenizer();
  FieldErrors errs;
  p = read_kobold(req.body, tok, tok.vocab_size(), e.n_ctx(), st.opt.default_max_length, errs);
  if (!errs.empty()) {
    send_json(res, 422, {{"detail", errs.to_json()}});
    return {};
  }
  // Only a context below 5 tokens leaves no prompt room once max_length is clamped.
  if (!reply_fits(p.max_length, p.max_context_length)) {
    kobold_error(res, 400, token_overflow_message(p), "token_overflow");
    return {};
  }
  // Tokenizing takes time and memory in proportion to the text: bound it before it starts.
  if (const size_t limit = prompt_byte_limit(st.opt); p.prompt.size() + p.memory.size() > limit) {
    kobold_error(res, 413,
                 cat("prompt: ", p.prompt.size() + p.memory.size(),
                     " bytes of prompt and memory are above this "
                     "server's limit of ",
                     limit, " bytes (--max-prompt-bytes)"),
                 "bad_input");
    return {};
  }
  int cut = 0;
  std::vector<int> ids;
  {
    TokenizeTurn turn(st, p.prompt.size() + p.memory.size());
    ids = kobold_prompt_ids(p, tok, &cut);
  }
  set_prompt_cut_header(res, cut);
  int n = stream ? 1 : p.n;
  std::vector<GenSpec> specs = make_specs(p.common, p.max_length, req.client, ids, n, st.opt.context_shift);
  for (GenSpec& g : specs) g.prompt_tokens_cut = cut;
  std::vector<std::shared_ptr<Job>> jobs;
  try {
    jobs = e.submit(std::move(specs));
  } catch (const Error& err) {
    kobold_error(res, 400, err.what(), "bad_input");
    return {};
  }
  if (jobs.empty()) send_busy(Api::kKobold, res);
  return jobs;
}

// KoboldCpp's logprobs object of a finished request that asked for them, else null.
json logprobs_of(const Job& j, const Tokenizer& tok) {
  if (!j.done() || j.spec().sampler.logprobs == SamplerParams::Logprobs::kOff) return nullptr;
  return kobold_logprobs(j.logprobs_from(0), tok);
}

void generate(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = ready(st, Api::kKobold, res);
  if (!e) return;
  auto p = std::make_shared<KoboldParams>();
  auto jobs = start_kobold(st, *e, req, res, *p, false);
  if (jobs.empty()) return;
  const Tokenizer* tok = &e->tokenizer();
  // The body is sent when every job has ended; a client that leaves early cancels them.
  follow_jobs(st, res, "application/json", jobs, {nullptr, [jobs, p, tok] {
                json results = json::array();
                for (const auto& j : jobs)
                  results.push_back({{"text", format_output(*p, j->text())},
                                     {"finish_reason", kobold_finish(j->finish())},
                                     {"logprobs", logprobs_of(*j, *tok)}});
                return dump({{"results", results}, {"prompt_tokens_cut", jobs[0]->spec().prompt_tokens_cut}});
              }});
}


std::string kobold_sse(const std::string& token, const char* finish) {
  return "event: message\ndata: " + dump({{"token", token}, {"finish_reason", finish}}) + "\n\n";
}

void generate_stream(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = ready(st, Api::kKobold, res);
  if (!e) return;
  auto p = std::make_shared<KoboldParams>();
  auto jobs = start_kobold(st, *e, req, res, *p, true);
  if (jobs.empty()) return;
  std::shared_ptr<Job> job = jobs[0];
  follow_jobs(st, res, "text/event-stream", jobs,
              {[](const std::string& delta) { return kobold_sse(delta, "null"); },
               [job] {
                 // A failure after the first token: the last event says so (finish_reason "error" and
                 // the message), with an empty token so that clients append nothing.
                 if (job->finish() == Finish::kError)
                   return "event: message\ndata: " +
                          dump({{"token", ""}, {"finish_reason", "error"}, {"error", "Generation failed: " + job->error()}}) +
                          "\n\n";
                 return kobold_sse("", kobold_finish(job->finish()));
               }});
}

std::string genkey_of(const ApiRequest& req) {
  if (req.body.is_object()) {
    auto it = req.body.find("genkey");
    if (it != req.body.end() && it->is_string()) return it->get<std::string>();
  }
  return req.http.get_param_value("genkey");
}

void check(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = st.engine.load();
  std::shared_ptr<Job> job = e ? e->find(genkey_of(req), req.client) : nullptr;
  std::string text = job ? job->text() : std::string();
  json r = {{"text", text}};
  if (job) r["finish_reason"] = job->done() ? kobold_finish(job->finish()) : "null";
  send_json(res, 200, {{"results", json::array({r})}});
}

// POST /api/extra/last_logprobs {"genkey": ...}: the logprobs of the request /check would show.
void last_logprobs(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = st.engine.load();
  std::shared_ptr<Job> job = e ? e->find(genkey_of(req), req.client) : nullptr;
  send_json(res, 200, {{"logprobs", job ? logprobs_of(*job, e->tokenizer()) : json(nullptr)}});
}

void abort_gen(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = st.engine.load();
  Engine::AbortCount n;
  if (e) n = e->abort(genkey_of(req), req.client);
  send_json(res, 200, {{"success", n.running + n.queued > 0 ? "true" : "false"}, {"done", n.running > 0 ? "true" : "false"}});
}

void tokencount(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = st.engine.load();
  if (!e) return send_no_model(Api::kKobold, res);
  FieldErrors errs;
  FieldReader r(req.body, errs);
  auto prompt = req.body.is_object() ? r.string("prompt") : std::nullopt;
  bool special = req.body.is_object() ? r.boolean("special").value_or(true) : true;
  if (!prompt || !errs.empty()) {
    std::string why = errs.empty() ? "prompt: Missing data for required field." : errs.first();
    return send_json(res, 400, {{"value", -1}, {"detail", {{"msg", why}, {"type", "bad_input"}}}});
  }
  if (const size_t limit = prompt_byte_limit(st.opt); prompt->size() > limit)
    return send_json(res, 413,
                     {{"value", -1},
                      {"detail",
                       {{"msg", cat("prompt: ", prompt->size(),
                                    " bytes are above this server's "
                                    "limit of ",
                                    limit, " bytes (--max-prompt-bytes)")},
                        {"type", "bad_input"}}}});
  std::vector<int> ids;
  {
    TokenizeTurn turn(st, prompt->size());
    ids = e->tokenizer().encode(*prompt, special);
  }
  send_json(res, 200, {{"value", ids.size()}, {"ids", ids}});
}

void detokenize(ServerState& st, const ApiRequest& req, httplib::Response& res) {
  Engine* e = st.engine.load();
  if (!e) return send_no_model(Api::kKobold, res);
  FieldErrors errs;
  FieldReader r(req.body, errs);
  auto ids = req.body.is_object() ? r.integers("ids", 1u << 20) : std::nullopt;
  std::vector<int> v;
  const Tokenizer& tok = e->tokenizer();
  if (ids)
    for (int64_t id : *ids) {
      if (id < 0 || id >= tok.vocab_size()) {
        errs.add("ids", cat("token id ", id, " is outside the vocabulary (", tok.vocab_size(), ")"));
        break;
      }
      v.push_back(int(id));
    }
  if (!ids || !errs.empty())
    return kobold_error(res, 400, errs.empty() ? "ids: Missing data for required field." : errs.first(), "bad_input");
  send_json(res, 200, {{"result", tok.decode(v)}, {"success", true}});
}

void perf(ServerState& st, const ApiRequest&, httplib::Response& res) {
  Engine* e = st.engine.load();
  EngineStats s = e ? e->stats() : EngineStats{};
  double uptime = std::chrono::duration<double>(std::chrono::steady_clock::now() - st.started).count();
  send_json(res, 200,
            {{"last_process", s.last.prompt_s},
             {"last_eval", s.last.gen_s},
             {"last_token_count", s.last.generated},
             {"last_input_count", s.last.prompt_tokens},
             {"last_cached_count", s.last.cached_tokens},
             {"last_prompt_tokens_cut", s.last.prompt_tokens_cut},
             {"last_seed", s.last.seed},
             {"total_gens", s.total_jobs},
             {"total_tokens", s.total_tokens},
             {"stop_reason", kobold_stop_reason(s.last_finish)},
             {"total_img_gens", 0},
             {"queue", s.queued},
             {"running", s.running},
             {"slots", s.slots},
             {"idle", s.running == 0 && s.queued == 0 ? 1 : 0},
             {"hordeexitcounter", 0},
             {"uptime", uptime},
             {"idletime", s.idle_s},
             {"quiet", false}});
}

}  // namespace

std::vector<Route> kobold_routes() {
  const std::string v1 = "/api/(?:v1|latest)";
  auto ctx_value = [](ServerState& st, const ApiRequest&, httplib::Response& res) {
    Engine* e = st.engine.load();
    value(res, e ? e->n_ctx() : st.opt.n_ctx);
  };
  return {
      {"GET", v1 + "/model/?", false,
       [](ServerState& st, const ApiRequest&, httplib::Response& res) {
         send_json(res, 200, {{"result", st.engine.load() ? "koboldcpp/" + model_name(st) : std::string("ReadOnly")}});
       }},
      {"GET", v1 + "/info/version(?:/latest)?/?", false,
       [](ServerState&, const ApiRequest&, httplib::Response& res) { send_json(res, 200, {{"result", kUnitedVersion}}); }},
      {"GET", v1 + "/info/version/list/?", false,
       [](ServerState&, const ApiRequest&, httplib::Response& res) {
         send_json(res, 200, {{"results", json::array({kUnitedVersion})}});
       }},
      {"GET", v1 + "/config/max_context_length/?", false, ctx_value},
      {"GET", v1 + "/config/max_length/?", false,
       [](ServerState& st, const ApiRequest&, httplib::Response& res) { value(res, st.opt.default_max_length); }},
      {"GET", v1 + "/config/soft_prompt/?", false,
       [](ServerState&, const ApiRequest&, httplib::Response& res) { value(res, ""); }},
      {"GET", v1 + "/config/soft_prompts_list/?", false,
       [](ServerState&, const ApiRequest&, httplib::Response& res) {
         send_json(res, 200, {{"values", json::array()}});
       }},
      {"POST", v1 + "/generate/?", true, generate},
      {"GET", "/api/extra/version/?", false,
       [](ServerState& st, const ApiRequest&, httplib::Response& res) {
         send_json(res, 200, {{"result", "KoboldCpp"},
                              {"version", kKoboldCppVersion},
                              {"protected", !st.opt.api_key.empty()},
                              {"txt2img", false},
                              {"vision", false},
                              {"transcribe", false},
                              {"server", "metharme"},
                              {"server_version", METHARME_VERSION}});
       }},
      {"GET", "/api/extra/true_max_context_length/?", false, ctx_value},
      {"GET", "/api/extra/perf/?", false, perf},
      {"GET", "/api/extra/preloadstory/?", false,
       [](ServerState&, const ApiRequest&, httplib::Response& res) { send_json(res, 200, json::object()); }},
      {"POST", "/api/extra/generate/stream/?", true, generate_stream},
      {"POST", "/api/extra/generate/check/?", true, check},
      {"GET", "/api/extra/generate/check/?", true, check},
      {"POST", "/api/extra/abort/?", true, abort_gen},
      {"POST", "/api/extra/last_logprobs/?", true, last_logprobs},
      {"POST", "/api/extra/tokencount/?", true, tokencount},
      {"POST", "/api/extra/tokenize/?", true, tokencount},
      {"POST", "/api/extra/detokenize/?", true, detokenize},
      // Lite asks for image models; there are none.
      {"GET", "/sdapi/v1/sd-models/?", false,
       [](ServerState&, const ApiRequest&, httplib::Response& res) { send_json(res, 200, json::array()); }},
  };
}

}  // namespace metharme::serve
