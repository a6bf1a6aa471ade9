// An in-process `metharme serve` on a free loopback port, and helpers to talk to it over HTTP.
#pragma once

#include <httplib.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "serve/engine.h"
#include "serve/server.h"
#include "support/model_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme::test {

struct ServerSetup {
  std::string model = "models/stories260k";  // under ../shared/fixtures
  int n_seq = 4, queue = 8, ctx = 512, prefill_chunk = 64;
  std::string api_key;
  std::vector<std::string> cors;
  size_t max_body = 1u << 20;
  bool attach = true;  // false: the server runs without a model
  std::string model_dir;  // non-empty: this folder instead of the fixture `model`
  serve::HttpLimits limits;
  size_t max_prompt_bytes = 0;
  bool metrics_public = false;  // /metrics without the API key
  SpecConfig spec{};            // speculative decoding (draft_model: a runtime with n_seq sequences)
  int gpu_layers = 0;           // RuntimeOptions::gpu_layers (GPU offload)
};

class TestServer {
 public:
  explicit TestServer(const ServerSetup& s = {});
  ~TestServer();
  int port() const { return port_; }
  const Tokenizer& tok() const { return tok_; }
  serve::Engine& engine() { return *engine_; }
  serve::Server& server() { return *server_; }
  httplib::Client client() const;
  void stop();  // stops the server and waits for run() to return

  // POST/GET with JSON; the reply's status and body.
  struct Reply {
    int status = 0;
    std::string body, content_type;
    httplib::Headers headers;
    nlohmann::json json() const { return nlohmann::json::parse(body); }
  };
  Reply post(const std::string& path, const nlohmann::json& body, const httplib::Headers& h = {}) const;
  Reply post_raw(const std::string& path, const std::string& body, const httplib::Headers& h = {}) const;
  Reply get(const std::string& path, const httplib::Headers& h = {}) const;
  // POST whose response body arrives piece by piece: on_data returns false to hang up.
  Reply post_stream(const std::string& path, const nlohmann::json& body,
                    const std::function<bool(const std::string& so_far)>& on_data, const httplib::Headers& h = {}) const;

 private:
  Loaded m_;
  Tokenizer tok_;
  std::unique_ptr<serve::Engine> engine_;
  std::unique_ptr<serve::Server> server_;
  std::thread thread_;
  int port_ = 0;
  bool stopped_ = false;
};

// Server-sent events parsed strictly: each is "event: X\n"? "data: Y\n" "\n"; anything else in
// the body is a framing error reported in `error`.
struct SseEvent {
  std::string event, data;
};
std::vector<SseEvent> parse_sse(const std::string& body, std::string& error);

// A TCP connection to 127.0.0.1:port with a receive timeout of timeout_s; -1 when refused.
int connect_loopback(int port, int timeout_s = 20);

}  // namespace metharme::test
