#include "serve/ops.h"

#include "serve/metrics.h"

namespace metharme::serve {

bool is_generation_path(const std::string& path) {
  auto strip = [](std::string p) {
    if (p.size() > 1 && p.back() == '/') p.pop_back();
    return p;
  };
  const std::string p = strip(path);
  return p == "/api/v1/generate" || p == "/api/latest/generate" || p == "/api/extra/generate/stream" ||
         p == "/v1/completions" || p == "/v1/completion" || p == "/v1/chat/completions";
}

void send_draining(Api api, httplib::Response& res) {
  const std::string msg = "This server is shutting down; please send the request again (another replica will take it).";
  json body = {{"detail", {{"msg", msg}, {"type", "service_unavailable"}}}};
  if (api == Api::kOpenAI)
    body["error"] = {{"message", msg}, {"type", "server_error"}, {"param", nullptr}, {"code", "service_unavailable"}};
  send_json(res, 503, body);
  res.set_header("Retry-After", "1");
}

void set_reuse_headers(httplib::Response& res, const std::vector<std::shared_ptr<Job>>& jobs) {
  int prompt = 0, reused = 0;
  for (const auto& j : jobs) {
    j->wait_started();
    JobStats s = j->stats();
    prompt += s.prompt_tokens;
    reused += s.cached_tokens;
  }
  res.set_header("X-Metharme-Prompt-Tokens", std::to_string(prompt));
  res.set_header("X-Metharme-Prompt-Tokens-Reused", std::to_string(reused));
}

std::string render_metrics(const ServerState& st) {
  EngineGauges g;
  if (Engine* e = st.engine.load()) {
    EngineStats s = e->stats();
    g.loaded = true;
    g.running = s.running;
    g.queued = s.queued;
    g.slots = s.slots;
    g.kv_used = s.kv_used;
    g.kv_total = s.kv_total;
  }
  return st.metrics->render(g);
}

}  // namespace metharme::serve
