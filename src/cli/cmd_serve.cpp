// metharme serve: the HTTP server (KoboldAI United, KoboldCpp, OpenAI APIs and a chat page).
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli/command.h"
#include "cli/runtime_flags.h"
#include "formats/hf_config.h"
#include "model/llama.h"
#include "serve/engine.h"
#include "serve/metrics.h"
#include "serve/server.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

struct Args {
  std::string model, host = "127.0.0.1", api_key, name;
  std::shared_ptr<RuntimeFlags> rt_flags;
  int port = 5001, ctx = 0, parallel = 4, queue = 8, batch = 128;
  std::vector<std::string> cors;
  bool no_shift = false;
  // Hostile-client limits (README "Limits").
  int connections = 0;  // 0: parallel + queue + 64
  serve::HttpLimits http;
  size_t max_body = 8u << 20, max_prompt_bytes = 0;
  double drain_timeout = 30;   // seconds a SIGTERM waits for running requests
  bool metrics_public = false;
};

// SIGINT/SIGTERM write their number to a pipe (all a handler may safely do, whichever thread
// it lands on); a watcher thread reads it and shuts the server down.
int g_signal_pipe[2] = {-1, -1};
extern "C" void on_signal(int sig) {
  unsigned char b = static_cast<unsigned char>(sig);
  ssize_t r = write(g_signal_pipe[1], &b, 1);
  (void)r;
}

int run_serve(const Args& a) {
  if (pipe(g_signal_pipe) != 0) fail("cannot create a pipe for signals");
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  LlamaConfig cfg = load_llama_config(a.model);
  int ctx = a.ctx > 0 ? a.ctx : std::min(2048, cfg.max_position_embeddings);
  serve::ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_key = a.api_key;
  so.cors = a.cors;
  so.n_ctx = ctx;
  so.context_shift = !a.no_shift;
  so.model_name = !a.name.empty() ? a.name : std::filesystem::path(a.model).lexically_normal().filename().string();
  if (so.model_name.empty() || so.model_name == ".")
    so.model_name = std::filesystem::absolute(a.model).lexically_normal().parent_path().filename().string();
  // Generous: a connection thread costs little, and slow clients hold one until --header-timeout.
  so.http_threads = a.connections > 0 ? a.connections : a.parallel + a.queue + 64;
  so.limits = a.http;
  so.max_body = a.max_body;
  so.max_prompt_bytes = a.max_prompt_bytes;
  so.metrics_public = a.metrics_public;
  serve::Server server(so);
  int port = server.bind();
  std::fprintf(stderr, "serve: listening on http://%s:%d (loading %s)\n", a.host.c_str(), port, a.model.c_str());
  std::thread http([&] { server.run(); });

  std::atomic<bool> ready{false};
  std::thread stopper;  // runs server.stop(), so that a second signal is still noticed meanwhile
  std::thread sig([&] {
    unsigned char s = 0;
    for (int n = 0;; ++n) {
      if (read(g_signal_pipe[0], &s, 1) != 1 || s == 0) return;  // 0: we are done
      if (!ready.load()) {
        std::fprintf(stderr, "serve: interrupted while loading the model\n");
        _exit(128 + s);
      }
      if (n > 0) {
        std::fprintf(stderr, "serve: second signal: exiting now\n");
        _exit(128 + s);
      }
      // SIGTERM drains (a balancer's replica being stopped); SIGINT (Ctrl-C) stops now.
      if (s == SIGTERM) {
        std::fprintf(stderr, "serve: SIGTERM: draining, then shutting down (a second signal exits at once)\n");
        stopper = std::thread([&server, t = a.drain_timeout] { server.drain(t); });
      } else {
        std::fprintf(stderr, "serve: SIGINT: ending running requests and shutting down\n");
        stopper = std::thread([&server] { server.stop(); });
      }
    }
  });
  auto wake_signal_thread = [&] {
    unsigned char zero = 0;
    ssize_t r = write(g_signal_pipe[1], &zero, 1);
    (void)r;
    sig.join();
    if (stopper.joinable()) stopper.join();
  };

  try {
    const auto t_load = std::chrono::steady_clock::now();
    auto w = load_weights(a.model);
    Tokenizer tok = Tokenizer::from_folder(a.model);
    RuntimeOptions ro;
    apply_runtime_flags(*a.rt_flags, *w, ro);
    ro.n_ctx = ctx;
    ro.n_seq = a.parallel;
    ro.max_batch = std::max(a.batch + a.parallel, 64);
    LlamaRuntime rt(*w, ro);
    serve::EngineOptions eo;
    eo.max_queue = a.queue;
    eo.prefill_chunk = a.batch;
    eo.metrics = &server.metrics();
    auto spec = setup_speculation(*a.rt_flags, tok, rt, ro);
    eo.spec = spec->cfg;
    server.metrics().set_model_load_seconds(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t_load).count());
    server.metrics().set_model_info(so.model_name, w->format, ctx, a.parallel);
    serve::Engine engine(rt, tok, eo);
    server.attach(&engine);
    ready.store(true);
    std::fprintf(stderr,
                 "serve: ready: %s (%s), context %d, %d parallel requests + %d queued, %d threads. Chat at "
                 "http://%s:%d/\n",
                 so.model_name.c_str(), w->format.c_str(), ctx, a.parallel, a.queue, rt.pool().size(), a.host.c_str(),
                 port);
    http.join();
    server.attach(nullptr);
    engine.shutdown();
  } catch (...) {
    server.stop();
    if (http.joinable()) http.join();
    wake_signal_thread();
    throw;
  }
  wake_signal_thread();
  std::fprintf(stderr, "serve: stopped\n");
  return 0;
}

Registrar reg("serve", "HTTP server: KoboldAI United, KoboldCpp and OpenAI APIs, and a chat page at /",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->model, "Model folder")->required();
  app.add_option("--host", a->host, "Address to listen on (default 127.0.0.1: this machine only)");
  app.add_option("--port", a->port, "TCP port (0: any free port)")->check(CLI::Range(0, 65535));
  app.add_option("--api-key", a->api_key, "Require 'Authorization: Bearer KEY' on generating routes");
  app.add_option("-c,--ctx,--contextsize", a->ctx,
                 "Context size in tokens (default: min(2048, model maximum); beyond it: automatic RoPE scaling)")
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("--parallel", a->parallel, "Requests generated at once (KV cache slots)")->check(CLI::Range(1, 256));
  app.add_option("--queue,--max-queue", a->queue,
                 "Requests that may wait for a slot; more get 503 at once (a balancer then tries another replica)")
      ->check(CLI::Range(0, 4096));
  app.add_option("--drain-timeout", a->drain_timeout,
                 "Seconds SIGTERM waits for queued and running requests before ending them (default 30)")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_flag("--metrics-public", a->metrics_public, "/metrics answers without the API key (default: it needs it)");
  app.add_option("--cors", a->cors, "Origin allowed to call the API from a browser page ('*' for any); repeatable");
  app.add_option("-b,--batch", a->batch, "Prompt tokens evaluated per step, shared by all prompts being read")
      ->check(CLI::Range(1, 8192));
  app.add_flag("--no-context-shift", a->no_shift,
               "Evaluate kept turns again instead of shifting the KV cache when a chat's front was cut");
  app.add_option("--name", a->name, "Model name reported by the APIs (default: the folder's name)");
  a->rt_flags = add_runtime_flags(app, "f16");
  add_speculative_flags(app, *a->rt_flags);
  app.add_option("--max-connections", a->connections, "Connections served at once (default: parallel + queue + 64)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--max-pending", a->http.max_pending, "Connections that may wait for those; more get 503 (default 64)")
      ->check(CLI::Range(0, 65536));
  app.add_option("--max-headers", a->http.max_headers, "Header lines per request; more get 431 (default 100)")
      ->check(CLI::Range(1, 10000));
  app.add_option("--max-header-bytes", a->http.max_header_bytes,
                 "Bytes of request line and headers; more get 431 (default 65536)")
      ->check(CLI::Range(1024, 16 << 20));
  app.add_option("--header-timeout", a->http.header_timeout_s,
                 "Seconds for a request's headers to arrive, else 408 (default 10)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--request-timeout", a->http.request_timeout_s,
                 "Seconds for a request's headers and body to arrive, else 408 (default 60)")
      ->check(CLI::Range(1, 3600));
  app.add_option("--max-body", a->max_body, "Request body bytes; more get 413 (default 8 MiB)")
      ->check(CLI::Range(size_t(1024), size_t(1) << 32));
  app.add_option("--max-prompt-bytes", a->max_prompt_bytes,
                 "Prompt text bytes tokenized per request; more get 413 (default: 64 per context token, "
                 "at least 256 KiB)")
      ->check(CLI::Range(size_t(1024), size_t(1) << 32));
  return [a] { return run_serve(*a); };
});

}  // namespace
}  // namespace metharme::cli
