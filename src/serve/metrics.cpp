#include "serve/metrics.h"

#include <algorithm>
#include <charconv>
#include <chrono>

#include "kernels/selftest.h"

namespace metharme::serve {

namespace {

// The shortest decimal that reads back as the same double.
std::string num(double v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

void head(std::string& out, const std::string& name, const char* type, const std::string& help) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void sample(std::string& out, const std::string& name, double v, const std::string& labels = "") {
  out += name;
  if (!labels.empty()) out += "{" + labels + "}";
  out += " " + num(v) + "\n";
}

void one(std::string& out, const std::string& name, const char* type, const std::string& help, double v) {
  head(out, name, type, help);
  sample(out, name, v);
}

// Latency buckets in seconds: from a cached 1-token prompt on a small model to a 2000-token
// prefill of a 7B model on two cores (~100 s).
std::vector<double> latency_bounds() {
  return {0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160, 320};
}
std::vector<double> token_time_bounds() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5};
}
std::vector<double> length_bounds() { return {1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}; }

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  size_t i = 0;
  while (i < bounds_.size() && v > bounds_[i]) ++i;
  std::lock_guard<std::mutex> lk(mu_);
  counts_[i]++;
  sum_ += v;
  count_++;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& help) const {
  std::lock_guard<std::mutex> lk(mu_);
  head(out, name, "histogram", help);
  uint64_t cum = 0;
  for (size_t i = 0; i < bounds_.size(); ++i) {
    cum += counts_[i];
    sample(out, name + "_bucket", double(cum), "le=\"" + num(bounds_[i]) + "\"");
  }
  sample(out, name + "_bucket", double(count_), "le=\"+Inf\"");
  sample(out, name + "_sum", sum_);
  sample(out, name + "_count", double(count_));
}

Metrics::Metrics()
    : ttft_(latency_bounds()),
      tpot_(token_time_bounds()),
      e2e_(latency_bounds()),
      queue_(latency_bounds()),
      prefill_(latency_bounds()),
      decode_(latency_bounds()),
      prompt_len_(length_bounds()),
      gen_len_(length_bounds()) {
  start_unix_ = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

void Metrics::observe_request(const std::string& route, int status) {
  std::lock_guard<std::mutex> lk(mu_);
  requests_[{route, status}]++;
}

void Metrics::observe_job(const JobStats& st, Finish f, int output_tokens, double e2e_s, bool has_first) {
  prompt_eval_.fetch_add(uint64_t(st.prompt_tokens - st.cached_tokens), std::memory_order_relaxed);
  prompt_cached_.fetch_add(uint64_t(st.cached_tokens), std::memory_order_relaxed);
  prompt_shifted_.fetch_add(uint64_t(st.shifted_tokens), std::memory_order_relaxed);
  generated_.fetch_add(uint64_t(std::max(0, output_tokens)), std::memory_order_relaxed);
  prompt_s_.fetch_add(st.prompt_s);
  gen_s_.fetch_add(st.gen_s);
  {
    std::lock_guard<std::mutex> lk(mu_);
    finished_[finish_name(f)]++;
  }
  queue_.observe(st.queue_s);
  e2e_.observe(e2e_s);
  prompt_len_.observe(st.prompt_tokens);
  gen_len_.observe(std::max(0, output_tokens));
  if (has_first) {
    ttft_.observe(st.queue_s + st.prompt_s);
    prefill_.observe(st.prompt_s);
    decode_.observe(st.gen_s);
    // The first token comes with the prefill; the rest share the decode time.
    if (st.generated > 1) tpot_.observe(st.gen_s / double(st.generated - 1));
  }
}

void Metrics::set_model_info(std::string name, std::string format, int n_ctx, int slots) {
  std::lock_guard<std::mutex> lk(mu_);
  model_name_ = std::move(name);
  model_format_ = std::move(format);
  n_ctx_ = n_ctx;
  slots_ = slots;
}

std::string Metrics::render(const EngineGauges& g) const {
  std::string out;
  out.reserve(16384);
  {
    std::lock_guard<std::mutex> lk(mu_);
    head(out, "metharme_build_info", "gauge", "Version of this metharme binary (always 1).");
    sample(out, "metharme_build_info", 1, "version=\"" + label_escape(METHARME_VERSION) + "\"");
    head(out, "metharme_model_info", "gauge", "The served model (always 1; absent while it loads).");
    if (g.loaded)
      sample(out, "metharme_model_info", 1,
             "model=\"" + label_escape(model_name_) + "\",format=\"" + label_escape(model_format_) +
                 "\",context_tokens=\"" + std::to_string(n_ctx_) + "\",slots=\"" + std::to_string(slots_) + "\"");
    head(out, "metharme_http_requests_total", "counter", "HTTP requests answered, by route and status code.");
    for (const auto& [k, n] : requests_)
      sample(out, "metharme_http_requests_total", double(n),
             "route=\"" + label_escape(k.first) + "\",status=\"" + std::to_string(k.second) + "\"");
    head(out, "metharme_requests_finished_total", "counter",
         "Generation requests ended, by reason (length, eos, stop, abort, error).");
    for (const auto& [k, n] : finished_)
      sample(out, "metharme_requests_finished_total", double(n), "reason=\"" + k + "\"");
  }
  one(out, "metharme_process_start_time_seconds", "gauge", "Start time of the process since the Unix epoch.",
      start_unix_);
  one(out, "metharme_ready", "gauge", "1 when the model is loaded and the server takes new requests.",
      g.loaded && !draining_.load() ? 1 : 0);
  one(out, "metharme_draining", "gauge", "1 while the server finishes its requests before exiting.", draining_.load());
  one(out, "metharme_requests_running", "gauge", "Requests holding a slot (reading the prompt or generating).",
      g.running);
  one(out, "metharme_requests_waiting", "gauge", "Requests queued for a free slot.", g.queued);
  one(out, "metharme_slots", "gauge", "KV cache slots (requests generated at once).", g.slots);
  one(out, "metharme_slots_busy", "gauge", "Slots running a request.", g.running);
  one(out, "metharme_kv_cache_positions", "gauge", "KV cache positions in all slots (slots x context).",
      double(g.kv_total));
  one(out, "metharme_kv_cache_positions_used", "gauge",
      "KV cache positions holding tokens (running requests and prefixes kept for reuse).", double(g.kv_used));
  one(out, "metharme_kv_cache_usage_ratio", "gauge", "Used over all KV cache positions (0 to 1).",
      g.kv_total > 0 ? double(g.kv_used) / double(g.kv_total) : 0.0);
  one(out, "metharme_prompt_tokens_total", "counter", "Prompt tokens evaluated (not served from the KV cache).",
      double(prompt_eval_.load()));
  one(out, "metharme_prompt_tokens_cached_total", "counter",
      "Prompt tokens reused from the KV cache of an earlier request (not evaluated again).",
      double(prompt_cached_.load()));
  one(out, "metharme_prompt_tokens_shifted_total", "counter",
      "Of the reused prompt tokens, those moved down after a dropped span (context shift).",
      double(prompt_shifted_.load()));
  one(out, "metharme_prompt_tokens_cut_total", "counter",
      "Prompt tokens dropped to fit the context (context clamping).", double(prompt_cut_.load()));
  one(out, "metharme_generation_tokens_total", "counter", "Output tokens generated and sent (an ending EOS excluded).",
      double(generated_.load()));
  one(out, "metharme_prompt_seconds_total", "counter", "Time requests spent reading their prompts.", prompt_s_.load());
  one(out, "metharme_generation_seconds_total", "counter", "Time requests spent generating after the first token.",
      gen_s_.load());
  one(out, "metharme_engine_steps_total", "counter", "Forward steps (one batch each) run by the engine.",
      double(steps_.load()));
  one(out, "metharme_engine_step_tokens_total", "counter", "Tokens in all forward steps (prompt and decode).",
      double(step_tokens_.load()));
  one(out, "metharme_model_load_seconds", "gauge", "Time taken to load the model and build the runtime.",
      load_s_.load());
  // The kernels test themselves on first use; a start-up self-test may add its own time.
  one(out, "metharme_self_test_seconds", "gauge", "Time taken by kernel self-tests (0 while none ran).",
      kernels::self_test_seconds() + self_test_s_.load());
  ttft_.render(out, "metharme_time_to_first_token_seconds", "From arrival to the first output token (queue included).");
  tpot_.render(out, "metharme_time_per_output_token_seconds", "Decode time per output token after the first.");
  e2e_.render(out, "metharme_request_duration_seconds", "From arrival to the end of generation.");
  queue_.render(out, "metharme_request_queue_seconds", "Time waiting for a slot.");
  prefill_.render(out, "metharme_request_prefill_seconds", "Time reading the prompt (from admission to first token).");
  decode_.render(out, "metharme_request_decode_seconds", "Time from the first to the last output token.");
  prompt_len_.render(out, "metharme_request_prompt_tokens", "Prompt length of finished requests, in tokens.");
  gen_len_.render(out, "metharme_request_generation_tokens", "Output length of finished requests, in tokens.");
  return out;
}

std::string route_label(const std::string& pattern) {
  std::string s = pattern;
  auto replace = [&](const std::string& from, const std::string& to) {
    for (size_t at; (at = s.find(from)) != std::string::npos;) s.replace(at, from.size(), to);
  };
  replace("(?:v1|latest)", "v1");
  replace("(?:/latest)?", "");
  replace("(.+)", "{id}");
  replace("/?", "");
  replace("?", "");
  return s;
}

std::string label_escape(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

}  // namespace metharme::serve
