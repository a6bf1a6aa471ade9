#include "serve/http.h"

#include <filesystem>

#include "serve/ops.h"

namespace metharme::serve {

Api api_of(const std::string& path) { return path.rfind("/v1/", 0) == 0 ? Api::kOpenAI : Api::kKobold; }

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

void send_json(httplib::Response& res, int status, const json& body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

void kobold_error(httplib::Response& res, int status, const std::string& msg, const std::string& type) {
  send_json(res, status, {{"detail", {{"msg", msg}, {"type", type}}}});
}

void openai_error(httplib::Response& res, int status, const std::string& msg, const std::string& type,
                  const std::string& param, const std::string& code) {
  json e = {{"message", msg}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  send_json(res, status, {{"error", e}});
}

void send_error(Api api, httplib::Response& res, int status, const std::string& msg, const std::string& type) {
  if (api == Api::kKobold) return kobold_error(res, status, msg, type);
  openai_error(res, status, msg, status >= 500 ? "server_error" : "invalid_request_error", "", type);
}

void send_busy(Api api, httplib::Response& res) {
  const std::string msg = "Server is busy; please try again later.";
  json body = {{"detail", {{"msg", msg}, {"type", "service_unavailable"}}}};
  if (api == Api::kOpenAI) body["error"] = {{"message", msg}, {"type", "server_error"}, {"param", nullptr}, {"code", "service_unavailable"}};
  send_json(res, 503, body);
  res.set_header("Retry-After", "1");
}

void send_no_model(Api api, httplib::Response& res) {
  send_error(api, res, 501,
             "API generation is not supported in read-only mode; please load a model and then try again.",
             "not_implemented");
}

std::string sse_event(const json& data) { return "data: " + dump(data) + "\n\n"; }

std::string model_name(const ServerState& st) { return st.opt.model_name; }

namespace {

// Shared by the provider calls of one response.
struct FollowState {
  std::vector<std::shared_ptr<Job>> jobs;
  Follow f;
  size_t sent = 0;  // bytes of jobs[0]'s text passed to on_text
  bool ended = false;
};

}  // namespace

void follow_jobs(ServerState& st, httplib::Response& res, const char* content_type,
                 std::vector<std::shared_ptr<Job>> jobs, Follow f) {
  auto fs = std::make_shared<FollowState>();
  fs->jobs = std::move(jobs);
  fs->f = std::move(f);
  set_reuse_headers(res, fs->jobs);
  st.following.fetch_add(1);
  ServerState* stp = &st;
  res.set_header("Cache-Control", "no-cache");
  res.set_header("X-Accel-Buffering", "no");
  res.set_chunked_content_provider(
      content_type,
      [fs](size_t, httplib::DataSink& sink) {
        if (fs->ended) {
          sink.done();
          return true;
        }
        Job& first = *fs->jobs[0];
        first.wait(fs->sent, std::chrono::milliseconds(100));
        // A vanished client stops the work at once (the releaser cancels the jobs).
        if (!sink.is_writable()) return false;
        // Read "done" before the text: once done, the text read after it is final.
        bool all_done = true;
        for (const auto& j : fs->jobs) all_done = all_done && j->done();
        std::string fresh = first.text_from(fs->sent);
        if (!fresh.empty()) {
          fs->sent += fresh.size();
          std::string bytes = fs->f.on_text ? fs->f.on_text(fresh) : std::string();
          if (!bytes.empty() && !sink.write(bytes.data(), bytes.size())) return false;
        }
        if (all_done) {
          std::string bytes = fs->f.on_end ? fs->f.on_end() : std::string();
          if (!bytes.empty() && !sink.write(bytes.data(), bytes.size())) return false;
          fs->ended = true;
          sink.done();
        }
        return true;
      },
      [fs, stp](bool success) {
        if (!success || !fs->ended)
          for (auto& j : fs->jobs) j->cancel();
        stp->following.fetch_sub(1);
      });
}

}  // namespace metharme::serve
