// One generation request as the server's engine sees it: what to generate (GenSpec) and the
// shared state through which an HTTP thread follows it (Job).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "sampling/sampler.h"

namespace metharme::serve {

// A request after validation: the prompt already fits the context together with max_new.
struct GenSpec {
  std::vector<int> prompt;  // token ids, BOS included
  int max_new = 180;        // tokens to generate at most
  SamplerParams sampler;
  std::vector<std::string> stop;            // text stop strings (matched on decoded output)
  bool trim_stop = false;                   // false: the output ends with the stop string
  bool stop_at_eos = true;                  // false: EOS may be sampled and generation goes on
  std::vector<std::string> banned_phrases;  // lower-case; output never contains them
  bool context_shift = true;  // may reuse a slot's KV after a dropped span (KoboldCpp ContextShift)
  std::string genkey;  // the client's name for this request (KoboldCpp), may be empty
  std::string client;  // remote address, to find requests without a genkey
  bool quiet = false;  // no log line
  int min_tokens = 0;  // EOS and stop strings have no effect before this many tokens
};

enum class Finish { kNone, kLength, kEos, kStop, kAbort, kError };
const char* finish_name(Finish f);  // "length", "eos", "stop", "abort", "error"

// Figures of a finished (or running) job.
struct JobStats {
  int prompt_tokens = 0;    // the prompt's length
  int cached_tokens = 0;    // prompt tokens whose KV was reused from an earlier request
  int shifted_tokens = 0;   // of those, tokens moved down after a dropped span
  int generated = 0;        // sampled tokens (EOS counted when it ended generation)
  double queue_s = 0, prompt_s = 0, gen_s = 0;  // waiting, prefill, sampling (first to last token)
  uint64_t seed = 0;
  std::chrono::steady_clock::time_point first_token_at, ended_at;  // engine-side event times
};

// Shared between the engine (producer) and an HTTP thread (consumer). The text is only what is
// final: the engine holds back any tail that a stop string or banned phrase could still remove.
class Job {
 public:
  using clock = std::chrono::steady_clock;
  explicit Job(GenSpec spec, uint64_t id) : spec_(std::move(spec)), id_(id), submitted_(clock::now()) {}

  const GenSpec& spec() const { return spec_; }
  uint64_t id() const { return id_; }
  clock::time_point submitted() const { return submitted_; }

  // Consumer side.
  // Waits until the text is longer than `have` bytes, the job ends, or `timeout` passes.
  void wait(size_t have, std::chrono::milliseconds timeout) const;
  // Waits until the job has a slot (its stats are set) or has ended.
  void wait_started() const;
  std::string text() const;
  std::string text_from(size_t offset) const;  // the text after `offset` bytes
  bool done() const;
  Finish finish() const;
  std::string error() const;
  JobStats stats() const;
  std::vector<int> tokens() const;  // the output token ids (EOS included when it ended the text)
  void cancel() { cancel_.store(true); }
  bool cancelled() const { return cancel_.load(); }

  // Producer side (the engine thread).
  void append(std::string_view more);  // more committed text
  void set_stats(const JobStats& s);
  // The end: the whole final text (it extends what was appended), why, and an error message.
  void end(Finish f, std::string final_text, std::string error = {}, std::vector<int> tokens = {});

 private:
  GenSpec spec_;
  uint64_t id_;
  clock::time_point submitted_;
  mutable std::mutex mu_;
  mutable std::condition_variable cv_;
  std::string text_;
  bool done_ = false;
  Finish finish_ = Finish::kNone;
  std::string error_;
  JobStats stats_;
  bool started_ = false;  // set_stats was called (the job got a slot)
  std::vector<int> tokens_;
  std::atomic<bool> cancel_{false};
};

}  // namespace metharme::serve
