// Prometheus metrics of `metharme serve` (GET /metrics, text format 0.0.4). Every name starts with
// metharme_, times are in seconds, counters end in _total. The engine reports finished jobs and
// steps, the HTTP layer every answered request; other parts fill the hooks (prompt tokens cut by
// context clamping, self-test time). Thread-safe: counters are atomics, histograms take a lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "serve/job.h"

namespace metharme::serve {

// A cumulative histogram with fixed upper bounds (the +Inf bucket is implicit).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Appends the _bucket/_sum/_count lines of `name`.
  void render(std::string& out, const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<uint64_t> counts_;  // [bounds_.size() + 1], not cumulative
  double sum_ = 0;
  uint64_t count_ = 0;
};

// The engine's state at scrape time (from Engine::stats()).
struct EngineGauges {
  bool loaded = false;
  int running = 0, queued = 0, slots = 0;
  int64_t kv_used = 0, kv_total = 0;  // KV positions holding tokens / all positions (slots x context)
};

class Metrics {
 public:
  Metrics();

  // HTTP layer: one answered request. `route` is a fixed label (see route_label), never a raw path.
  void observe_request(const std::string& route, int status);
  // Engine: a job ended. output_tokens excludes an EOS that ended it (what clients are sent).
  void observe_job(const JobStats& st, Finish f, int output_tokens, double e2e_s, bool has_first);
  // Engine: one forward step over `tokens` batch entries.
  void observe_step(int tokens) {
    steps_.fetch_add(1, std::memory_order_relaxed);
    step_tokens_.fetch_add(uint64_t(tokens), std::memory_order_relaxed);
  }
  // Hooks for other parts of the server.
  void add_prompt_tokens_cut(uint64_t n) { prompt_cut_.fetch_add(n, std::memory_order_relaxed); }
  void set_model_load_seconds(double s) { load_s_.store(s); }
  void set_self_test_seconds(double s) { self_test_s_.store(s); }
  void set_model_info(std::string name, std::string format, int n_ctx, int slots);
  void set_draining(bool d) { draining_.store(d); }

  // The whole exposition.
  std::string render(const EngineGauges& g) const;

 private:
  std::atomic<uint64_t> prompt_eval_{0}, prompt_cached_{0}, prompt_shifted_{0}, generated_{0}, prompt_cut_{0};
  std::atomic<uint64_t> steps_{0}, step_tokens_{0};
  std::atomic<double> prompt_s_{0}, gen_s_{0}, load_s_{0}, self_test_s_{0};
  std::atomic<bool> draining_{false};
  double start_unix_ = 0;

  mutable std::mutex mu_;                                     // guards the maps and the info strings
  std::map<std::pair<std::string, int>, uint64_t> requests_;  // (route, status) -> count
  std::map<std::string, uint64_t> finished_;                  // finish reason -> count
  std::string model_name_, model_format_;
  int n_ctx_ = 0, slots_ = 0;

  Histogram ttft_, tpot_, e2e_, queue_, prefill_, decode_, prompt_len_, gen_len_;
};

// A bounded label for a route regex: "/api/(?:v1|latest)/generate/?" -> "/api/v1/generate".
std::string route_label(const std::string& pattern);
// Escapes a label value for the text format (backslash, quote, newline).
std::string label_escape(const std::string& v);

}  // namespace metharme::serve
