// The connection guard of `metharme serve`: cpp-httplib (Debian's prebuilt 0.11) reads a request
// head with no limit on its header count, total size or duration, and queues accepted connections
// without bound. GuardedHttpServer reads every connection through a stream that enforces those
// limits, and serves connections from a bounded queue; what is over a limit gets a short error
// response (408, 431, 503) and the connection is closed.
#pragma once

#include <httplib.h>

#include <atomic>
#include <cstddef>
#include <ctime>

namespace metharme::serve {

struct HttpLimits {
  int threads = 16;                     // connections served at once
  int max_pending = 64;                 // accepted connections waiting for a thread; more get 503
  int max_headers = 100;                // header lines per request; more get 431
  size_t max_header_bytes = 64u << 10;  // request line + headers; more get 431
  int header_timeout_s = 10;            // the whole head must arrive within this; else 408
  int request_timeout_s = 60;           // head and body must arrive within this; else 408
  int read_timeout_s = 10;              // one read without progress
  int write_timeout_s = 10;             // one write without progress
  int keep_alive_s = 3;                 // idle wait for the next request on a connection
};

class GuardedHttpServer : public httplib::Server {
 public:
  explicit GuardedHttpServer(const HttpLimits& limits);
  const HttpLimits& limits() const { return lim_; }
  // After binding: a listen backlog of threads + max_pending (httplib's is 5, which drops the
  // connections of a burst at the kernel, to be retried a second later).
  void widen_backlog();
  // Connections: being served now, and refused so far for each reason.
  int active() const { return active_.load(); }
  uint64_t refused_busy() const { return busy_.load(); }
  uint64_t refused_head() const { return head_.load(); }

 private:
  // Called by httplib for every accepted connection, on a thread of the connection queue.
  bool process_and_close_socket(socket_t sock) override;

  HttpLimits lim_;
  std::atomic<int> active_{0};
  std::atomic<uint64_t> busy_{0}, head_{0};
};

// True when the client of the request being handled on this thread has closed its end or reset
// the connection (always false off a guarded connection thread). Lets a handler that waits for a
// job notice that nobody will read the answer.
bool client_gone();

}  // namespace metharme::serve
