// Continuous batching over one LlamaRuntime: every step is ONE forward() that carries the next
// token of every decoding request plus a fair share of pending prompt tokens, so concurrent
// decodes run as one batched matrix product per linear. Each request owns a KV slot (a runtime
// sequence) and a sampler while it runs; a slot keeps its tokens afterwards so that a later prompt
// sharing a prefix (a chat resent with one more turn) skips re-reading it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "chat/speculative.h"
#include "grammar/matcher.h"
#include "model/llama.h"
#include "serve/job.h"
#include "serve/metrics.h"
#include "serve/output.h"
#include "tokenizer/tokenizer.h"

namespace metharme::serve {

struct EngineOptions {
  int max_queue = 8;        // requests waiting for a slot; more are refused
  int prefill_chunk = 128;  // prompt tokens per step, shared by all prompts being read
  // Finished jobs and steps are reported here when set (/metrics).
  Metrics* metrics = nullptr;
  // Speculative decoding for every request (README "Speculative decoding"); a draft model needs
  // at least as many sequences as the engine has slots.
  SpecConfig spec{};
};

// Counters for /api/extra/perf.
struct EngineStats {
  int running = 0, queued = 0, slots = 0;
  uint64_t total_jobs = 0;  // finished
  uint64_t total_tokens = 0;  // generated, all jobs
  JobStats last;             // the last finished job
  Finish last_finish = Finish::kNone;
  double idle_s = 0;         // seconds with nothing to do, since start
  // KV positions holding tokens (all slots, kept prefixes included) / slots x context.
  int64_t kv_used = 0, kv_total = 0;
  SpecStats spec;  // speculative decoding, all jobs since start
};

class Engine {
 public:
  // Slots = rt.kv().n_seq(). The engine runs its own thread until shutdown() or destruction.
  Engine(LlamaRuntime& rt, const Tokenizer& tok, const EngineOptions& opt);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  int n_ctx() const { return rt_->n_ctx(); }
  int n_slots() const { return int(slots_.size()); }
  const Tokenizer& tokenizer() const { return *tok_; }

  // Queues requests (all or none). Returns an empty vector when the queue has no room for all of
  // them. Throws Error for a spec that cannot run (prompt and max_new beyond the context, ...).
  std::vector<std::shared_ptr<Job>> submit(std::vector<GenSpec> specs);
  std::shared_ptr<Job> submit(GenSpec spec);

  // Aborts the requests named by genkey (any client), or with an empty genkey those of `client`
  // that have no genkey. Returns how many were running and how many were still queued.
  struct AbortCount {
    int running = 0, queued = 0;
  };
  AbortCount abort(const std::string& genkey, const std::string& client);
  // The request that /check should report: by genkey, or the newest keyless one of `client`;
  // finished requests are remembered for a while.
  std::shared_ptr<Job> find(const std::string& genkey, const std::string& client) const;

  EngineStats stats() const;
  // Ends every request (as aborted) and stops the engine thread.
  void shutdown();

 private:
  struct Slot {
    std::shared_ptr<Job> job;  // null: free
    std::vector<int> kv;       // tokens whose keys/values are stored, at positions 0..kv.size()-1
    uint64_t last_used = 0;
    // While a job runs:
    int prompt_done = 0;       // prompt tokens in kv (prefill progress)
    int pending = -1;          // sampled token not yet fed (decoding), or -1
    std::vector<int> history;  // prompt + output (repetition penalties)
    std::optional<Sampler> sampler;
    std::optional<OutputText> out;
    std::vector<std::vector<int>> bans;  // bans[i]: tokens banned as output token i (phrase bans)
    int rewinds = 0;
    size_t committed = 0;
    bool at_start = false;            // the output begins a text (its first space is dropped)
    std::vector<StepLogprobs> lps;    // per output token, when the spec asks for log-probabilities
    size_t lps_published = 0;
    Job::clock::time_point t_start, t_first;
    bool has_first = false;
    // Speculative decoding (drafter null: off for the engine).
    std::unique_ptr<Drafter> drafter;
    bool spec_on = false;     // this job drafts (see start())
    std::vector<int> drafts;  // [draft_max] this step's drafts, n_draft of them
    int n_draft = 0;
    int row = 0;                          // this step's first logits row (n_draft + 1 rows)
    int base = 0;                         // the KV position of this step's first token
    std::vector<int> drawn;               // this step's tokens: kept drafts, then one drawn token
    std::vector<StepLogprobs> drawn_lps;  // their log-probabilities (when the job asks)
    SpecStats spec;                       // this job's figures
  };

  void run();                            // the engine thread: loop(), restarted after any exception it lets through
  void loop();                           // returns only when shutting down
  void forward_step();                   // rt_->forward(batch_), retried per slot after an error
  void recover(const std::string& why);  // after an exception in loop(): its running jobs fail
  void admit_locked();                   // moves queued jobs into free slots
  void start(Slot& s, std::shared_ptr<Job> job);
  // The slot's token after `j` kept drafts from its logits row, verifying `draft` (-1: a plain
  // draw). Thread-safe per slot.
  int draw(Slot& s, float* logits, int j, int draft);
  int init_spec();                     // drafters and per-slot buffers; logits rows per slot (engine_spec.cpp)
  void draw_step(Slot& s);             // fills s.drawn from the slot's rows (engine_spec.cpp)
  void feed_decode(Slot& s, int seq);  // puts pending and its drafts in the batch (engine_spec.cpp)
  void take_step(Slot& s);             // handles s.drawn in order (engine_spec.cpp)
  void sample(Slot& s, int tok, const StepLogprobs* lp);  // handles one token: stop, stream, or feed it next
  // status: the HTTP status of a kError (see Job::error_status).
  void finish(Slot& s, Finish f, const std::string& error = {}, int status = 500);
  void publish(Slot& s);
  void remember_locked(const std::shared_ptr<Job>& job);
  // Engine thread: kv_used_ = the slots' kv sizes.
  void store_kv_used();

  LlamaRuntime* rt_;
  const Tokenizer* tok_;
  grammar::TokenTable gtokens_;  // token texts for grammars, built once
  EngineOptions opt_;
  std::vector<Slot> slots_;

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Job>> queue_;
  std::deque<std::shared_ptr<Job>> recent_;  // finished, newest last
  bool stop_ = false;
  uint64_t next_id_ = 1, clock_ = 0;
  EngineStats stats_;
  Job::clock::time_point t_idle_;
  bool idle_ = true;
  int rr_ = 0;  // where prefill shares start (rotates for fairness)
  // METHARME_TEST_ENGINE_FAULT=N: when a request draws its Nth token the loop waits 0.5 s and
  // throws, so tests see a failure after a stream began and the engine's recovery (0: off).
  int fault_after_ = 0;
  // The slots' kv sizes summed after the last step (/metrics).
  std::atomic<int64_t> kv_used_{0};

  // Step buffers, sized once.
  std::vector<BatchToken> batch_;
  std::vector<int> row_slot_;            // slots with logits rows this step, in row order
  std::vector<int> drawn_;               // row_slot_ entry -> 0 drawn, -1 failed
  int n_rows_ = 0;                       // logits rows of this step
  std::vector<std::string> draw_error_;  // logits row -> why its draw failed ("" if it did not)
  std::vector<int> draw_status_;         // logits row -> HTTP status of that failure
  std::vector<float> logits_;            // [n_slots * (draft_max + 1)][n_vocab]
  std::thread thread_;
};

}  // namespace metharme::serve
