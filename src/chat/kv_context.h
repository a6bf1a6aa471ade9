// One sequence's KV cache together with the tokens it holds, so that a new prompt only
// evaluates what the cache does not already have (KoboldCpp's "fast forward" and
// "context shift").
#pragma once

#include <atomic>
#include <span>
#include <vector>

#include "model/llama.h"

namespace metharme {

// How a prompt reuses a cache:  cache  = [keep][drop][shifted][stale...]
//                               prompt = [keep][shifted][evaluate]
// The dropped span is deleted and the shifted tokens slide down into its place, their keys
// turned to the new positions. Their values (and keys past layer 0) still carry what the dropped
// tokens contributed, so a shift approximates a full re-prefill: exact for one layer, close for
// a chat that drops old turns.
struct KvPlan {
  int keep = 0;      // leading tokens equal in cache and prompt
  int drop = 0;      // cached tokens deleted after them
  int shifted = 0;   // cached tokens moved down by `drop` positions
  int evaluate = 0;  // prompt tokens still to evaluate (at least one, for the logits)
};

// The plan that reuses the most tokens. A shift is used only when it reuses at least
// `min_shift` tokens (min_shift <= 0: never shift).
KvPlan plan_kv_reuse(std::span<const int> cached, std::span<const int> prompt, int min_shift);

class KvContext {
 public:
  static constexpr int kMinShift = 8;
  static constexpr size_t kAbortChunk = 64;  // prompt tokens evaluated between abort checks

  explicit KvContext(LlamaRuntime& rt, int seq = 0);

  LlamaRuntime& runtime() { return *rt_; }
  int seq() const { return seq_; }
  const std::vector<int>& tokens() const { return tokens_; }  // ids at positions 0..size()-1
  int size() const { return int(tokens_.size()); }
  void clear() { tokens_.clear(); }

  // Makes the cache hold exactly `prompt` and returns the logits after its last token (valid
  // until the next evaluation). allow_shift = false re-evaluates everything after the common
  // prefix instead of shifting. When *abort turns true the evaluation stops between chunks
  // and nullptr is returned; the cache then holds the part evaluated so far.
  const float* sync(std::span<const int> prompt, bool allow_shift = true, const std::atomic<bool>* abort = nullptr);
  // Evaluates one more token at position size().
  const float* append(int id);
  // Evaluates ids at positions size().. in one forward pass with the logits of every one:
  // returns [ids.size()][n_vocab] (valid until the next extend). Speculative verification.
  const float* extend(std::span<const int> ids);
  // Forgets the tokens from position n on (rejected drafts); their cache rows are simply
  // overwritten by the next evaluation, attention never reads past a token's own position.
  void truncate(int n);
  const KvPlan& last_plan() const { return plan_; }

 private:
  LlamaRuntime* rt_;
  int seq_;
  std::vector<int> tokens_;  // reserved for n_ctx: append() does not allocate
  KvPlan plan_;
  std::vector<BatchToken> batch_;  // extend(): grows to the longest draft once
  std::vector<float> rows_;        // extend(): [tokens][n_vocab]
};

}  // namespace metharme
