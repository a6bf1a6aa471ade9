// Pieces shared by the route files: the server state they see, JSON and error replies in the
// KoboldAI and OpenAI shapes, and responses that follow a running job (SSE or a JSON body sent
// when the job ends, both noticing a client that went away).
#pragma once

#include <httplib.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "serve/engine.h"
#include "serve/job.h"
#include "serve/server.h"

namespace metharme::serve {

using json = nlohmann::json;

// What every route handler may use. The engine appears once the model is loaded.
struct ServerState {
  ServerOptions opt;
  std::atomic<Engine*> engine{nullptr};
  std::atomic<bool> stopping{false};
  std::atomic<int> following{0};  // responses still following a job
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
  int64_t created_unix = 0;       // when the server started, for OpenAI "created" fields
  // Scale-out (ops.h): draining refuses new generations; `generating` counts handlers between
  // reading a generation request and handing its jobs to a response, so a drain never misses one.
  std::atomic<bool> draining{false};
  std::atomic<int> generating{0};
  std::shared_ptr<Metrics> metrics = std::make_shared<Metrics>();
};

enum class Api { kKobold, kOpenAI };
Api api_of(const std::string& path);  // /v1/... is OpenAI, everything else KoboldAI

std::string dump(const json& j);  // invalid UTF-8 is replaced, never thrown on
void send_json(httplib::Response& res, int status, const json& body);
// {"detail":{"msg":msg,"type":type}}
void kobold_error(httplib::Response& res, int status, const std::string& msg, const std::string& type);
// {"error":{"message":msg,"type":type,"param":param,"code":code}}
void openai_error(httplib::Response& res, int status, const std::string& msg, const std::string& type,
                  const std::string& param = "", const std::string& code = "");
void send_error(Api api, httplib::Response& res, int status, const std::string& msg, const std::string& type);
// 503 "Server is busy" (queue full or shutting down), in both shapes at once for /v1 routes.
void send_busy(Api api, httplib::Response& res);
// 501 "no model loaded yet".
void send_no_model(Api api, httplib::Response& res);

// A parsed request: the JSON body ({} when empty) and who sent it.
struct ApiRequest {
  const httplib::Request& http;
  json body;
  std::string client;  // remote address
};
using RouteFn = std::function<void(ServerState&, const ApiRequest&, httplib::Response&)>;

// Writes a job's progress into a chunked response. on_text turns new text into bytes to send
// (may return ""), on_end the bytes that close the response once every job is done. When the
// client goes away, the jobs are cancelled at once.
struct Follow {
  std::function<std::string(const std::string& delta)> on_text;
  std::function<std::string()> on_end;
};
void follow_jobs(ServerState& st, httplib::Response& res, const char* content_type,
                 std::vector<std::shared_ptr<Job>> jobs, Follow f);

std::string sse_event(const json& data);  // "data: {...}\n\n"

// Route tables of the two APIs (api_kobold.cpp, api_openai.cpp).
struct Route {
  const char* method;
  std::string pattern;  // regex over the path
  bool needs_key;       // --api-key applies
  RouteFn fn;
};
std::vector<Route> kobold_routes();
std::vector<Route> openai_routes();

// The model's name as the APIs report it.
std::string model_name(const ServerState& st);

}  // namespace metharme::serve
