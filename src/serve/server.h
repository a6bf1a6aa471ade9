// `metharme serve`: KoboldAI United, KoboldCpp and OpenAI-compatible HTTP APIs and a web chat page
// over one Engine (../shared/docs/kobold-api.md). Binds before the model is loaded: until
// attach(), generating routes answer 501 and /api/v1/model says "ReadOnly".
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

namespace metharme::serve {

class Engine;
struct ServerState;

struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 5001;                  // 0: any free port (see Server::bind)
  std::string api_key;              // non-empty: generating routes need "Authorization: Bearer KEY"
  std::vector<std::string> cors;    // origins allowed to call from a browser ("*": any)
  std::string model_name = "model";
  int n_ctx = 2048;                 // the context the engine will have (reported before it loads)
  int default_max_length = 180;     // Kobold max_length when omitted (KoboldCpp's default)
  bool context_shift = true;        // reuse KV after a dropped span (see Engine)
  size_t max_body = 8u << 20;       // request bodies above this are refused (413)
  int http_threads = 16;            // connections served at once
  bool metrics_public = false;      // /metrics answers without the API key
};

class Metrics;

class Server {
 public:
  explicit Server(const ServerOptions& opt);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds host:port and returns the port. Throws Error naming the address if it is taken.
  int bind();
  // Serves until stop(); call after bind(), from any thread.
  void run();
  // The model is ready: generating routes start working. The engine must outlive the server.
  void attach(Engine* engine);
  // Graceful: new requests are refused, running ones end (as aborted) and their responses are
  // finished, then run() returns. Safe from any thread, more than once.
  void stop();
  // SIGTERM: /health answers 503 and new generations get 503 with Retry-After at once; requests
  // already queued or running finish, their responses included; after `timeout_s` what is left
  // is ended as by stop(). Returns when run() may return (drain.cpp).
  void drain(double timeout_s);
  Metrics& metrics();

 private:
  std::unique_ptr<ServerState> st_;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace metharme::serve
