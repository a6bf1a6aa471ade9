// Perplexity and KL-divergence over the windows of an EvalSet, with batched prefill: each window is
// fed in chunks of positions (the runtime splits them further by its max_batch) and the logits of a
// chunk are consumed before the next, so memory stays at chunk x vocab floats per model however
// long the window. Several models (and a base model for KL-divergence) walk the same windows in
// step, so the base's distributions are never stored.
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "eval/eval_set.h"
#include "eval/kld.h"
#include "model/llama.h"

namespace metharme::eval {

// One model's scores on one EvalSet.
struct ModelScores {
  std::vector<double> window_nll;  // mean NLL of each window's scored predictions
  double sum_nll = 0, sum_nll2 = 0;  // over all scored predictions
  int64_t scored = 0;              // scored predictions
  int64_t tokens = 0;              // tokens evaluated (windows x window)
  std::vector<float> kld;          // KL(base || model) per scored prediction, in order (with a base)
  int64_t top1_same = 0;           // predictions whose argmax equals the base's
  double seconds = 0;              // forward passes and scoring of this model

  double mean_nll() const;         // mean of window_nll
  double ppl() const;              // exp(mean_nll())
  double ppl_stderr() const;       // ppl * standard error of the per-token NLL mean
  double tokens_per_second() const { return seconds > 0 ? double(tokens) / seconds : 0; }
};

struct EvalResult {
  std::vector<ModelScores> models;  // in the order given
  ModelScores base;                 // when a base was given
};

struct EvalOptions {
  int chunk = 512;  // positions per forward call (bounds the logits buffers)
  // Called after each window: windows done, scores so far.
  std::function<void(int, const EvalResult&)> on_window;
  // Scores of the first windows from an earlier run (a checkpoint): evaluation continues after them.
  const EvalResult* resume = nullptr;
};

// Evaluates every window of `set` with each model; with `base`, also KL(base || model) and top-1
// agreement per scored position. A model that is `base` itself reuses the base's logits.
// Every runtime needs n_ctx >= set.window and the same vocabulary.
EvalResult evaluate(const EvalSet& set, std::span<LlamaRuntime* const> models, LlamaRuntime* base,
                    const EvalOptions& opt = {});

}  // namespace metharme::eval
