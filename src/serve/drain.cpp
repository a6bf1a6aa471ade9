// Server::drain: the SIGTERM path of a replica behind a load balancer (see README, "Scale out").
#include <chrono>
#include <cstdio>
#include <thread>

#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/server.h"

namespace metharme::serve {

void Server::drain(double timeout_s) {
  using clock = std::chrono::steady_clock;
  ServerState& st = *st_;
  // From here /health answers 503 and the route wrapper refuses new generations.
  st.draining.store(true);
  st.metrics->set_draining(true);
  auto left = [&st] {
    int n = st.generating.load() + st.following.load();
    if (Engine* e = st.engine.load()) {
      EngineStats s = e->stats();
      n += s.running + s.queued;
    }
    return n;
  };
  const auto deadline =
      clock::now() + std::chrono::duration_cast<clock::duration>(std::chrono::duration<double>(timeout_s));
  int n = left();
  std::fprintf(stderr, "serve: draining: %d request(s) and response(s) to finish (at most %.0f s)\n", n, timeout_s);
  while ((n = left()) > 0 && clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (n > 0) std::fprintf(stderr, "serve: drain timeout: ending %d request(s) now\n", n);
  stop();
}

}  // namespace metharme::serve
