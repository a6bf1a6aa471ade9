// metharme serve: the HTTP server (KoboldAI United, KoboldCpp, OpenAI APIs and a chat page).
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "cli/command.h"
#include "formats/hf_config.h"
#include "model/llama.h"
#include "serve/engine.h"
#include "serve/server.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme::cli {
namespace {

struct Args {
  std::string model, host = "127.0.0.1", api_key, name, kv = "f16";
  int port = 5001, ctx = 0, parallel = 4, queue = 8, threads = 0, batch = 128;
  std::vector<std::string> cors;
};

int run_serve(const Args& a) {
  // Signals are taken by one thread with sigwait; every other thread (HTTP workers, the
  // engine, the compute pool) inherits the block.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  LlamaConfig cfg = load_llama_config(a.model);
  int ctx = a.ctx > 0 ? a.ctx : std::min(2048, cfg.max_position_embeddings);
  if (ctx > cfg.max_position_embeddings)
    std::fprintf(stderr, "serve: warning: --ctx %d is beyond the model's trained context of %d\n", ctx,
                 cfg.max_position_embeddings);
  serve::ServerOptions so;
  so.host = a.host;
  so.port = a.port;
  so.api_key = a.api_key;
  so.cors = a.cors;
  so.n_ctx = ctx;
  so.model_name = !a.name.empty() ? a.name : std::filesystem::path(a.model).lexically_normal().filename().string();
  if (so.model_name.empty() || so.model_name == ".")
    so.model_name = std::filesystem::absolute(a.model).lexically_normal().parent_path().filename().string();
  so.http_threads = a.parallel + a.queue + 16;
  serve::Server server(so);
  int port = server.bind();
  std::fprintf(stderr, "serve: listening on http://%s:%d (loading %s)\n", a.host.c_str(), port, a.model.c_str());
  std::thread http([&] { server.run(); });

  std::atomic<bool> ready{false}, finished{false};
  std::thread sig([&] {
    int s = 0;
    sigwait(&sigs, &s);
    if (finished.load()) return;
    if (!ready.load()) {
      std::fprintf(stderr, "serve: interrupted while loading the model\n");
      _exit(130);
    }
    std::fprintf(stderr, "serve: %s: finishing running requests and shutting down\n", s == SIGINT ? "SIGINT" : "SIGTERM");
    server.stop();
  });
  auto wake_signal_thread = [&] {
    finished.store(true);
    pthread_kill(sig.native_handle(), SIGTERM);
    sig.join();
  };

  try {
    auto w = load_weights(a.model);
    Tokenizer tok = Tokenizer::from_folder(a.model);
    RuntimeOptions ro;
    ro.n_ctx = ctx;
    ro.n_seq = a.parallel;
    ro.n_threads = a.threads;
    ro.max_batch = std::max(a.batch + a.parallel, 64);
    ro.kv_type = a.kv == "f32" ? kernels::WType::kF32 : kernels::WType::kF16;
    LlamaRuntime rt(*w, ro);
    serve::EngineOptions eo;
    eo.max_queue = a.queue;
    eo.prefill_chunk = a.batch;
    serve::Engine engine(rt, tok, eo);
    server.attach(&engine);
    ready.store(true);
    std::fprintf(stderr,
                 "serve: ready: %s (%s), context %d, %d parallel requests + %d queued, %d threads. Chat at "
                 "http://%s:%d/\n",
                 so.model_name.c_str(), w->format.c_str(), ctx, a.parallel, a.queue, rt.pool().size(), a.host.c_str(),
                 port);
    http.join();
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
  app.add_option("-c,--ctx", a->ctx, "Context size in tokens (default: min(2048, model maximum))")
      ->check(CLI::Range(16, 1 << 20));
  app.add_option("--parallel", a->parallel, "Requests generated at once (KV cache slots)")->check(CLI::Range(1, 256));
  app.add_option("--queue", a->queue, "Requests that may wait for a slot; more get 503")->check(CLI::Range(0, 4096));
  app.add_option("--cors", a->cors, "Origin allowed to call the API from a browser page ('*' for any); repeatable");
  app.add_option("-b,--batch", a->batch, "Prompt tokens evaluated per step, shared by all prompts being read")
      ->check(CLI::Range(1, 8192));
  app.add_option("--kv-type", a->kv, "KV cache precision")->check(CLI::IsMember({"f16", "f32"}));
  app.add_option("--name", a->name, "Model name reported by the APIs (default: the folder's name)");
  add_threads_option(app, a->threads);
  return [a] { return run_serve(*a); };
});

}  // namespace
}  // namespace metharme::cli
