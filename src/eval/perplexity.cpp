#include "eval/perplexity.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "util/error.h"

namespace metharme::eval {

namespace {

using Clock = std::chrono::steady_clock;
double since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// Per-row results of one chunk, filled in parallel and reduced in row order.
struct RowStats {
  std::vector<RowSummary> summary;
  std::vector<double> nll, kld;
  void resize(size_t n) {
    summary.resize(n);
    nll.resize(n);
    kld.resize(n);
  }
};

}  // namespace

double ModelScores::mean_nll() const {
  if (window_nll.empty()) return NAN;
  double s = 0;
  for (double v : window_nll) s += v;
  return s / double(window_nll.size());
}

double ModelScores::ppl() const { return std::exp(mean_nll()); }

double ModelScores::ppl_stderr() const {
  if (scored < 2) return 0;
  double m = sum_nll / double(scored);
  double var = std::max(0.0, sum_nll2 / double(scored) - m * m);
  return ppl() * std::sqrt(var / double(scored - 1));
}

EvalResult evaluate(const EvalSet& set, std::span<LlamaRuntime* const> models, LlamaRuntime* base,
                    const EvalOptions& opt) {
  MH_CHECK(!models.empty(), "perplexity: no model to evaluate");
  MH_CHECK(set.n_windows() > 0, "perplexity: no windows to evaluate");
  const int W = set.window;
  const int V = models[0]->n_vocab();
  std::vector<LlamaRuntime*> all(models.begin(), models.end());
  if (base) all.push_back(base);
  for (LlamaRuntime* rt : all) {
    MH_CHECK(rt->n_vocab() == V, "perplexity: the models have different vocabularies (", V, " and ", rt->n_vocab(),
             " tokens)");
    MH_CHECK(rt->n_ctx() >= W, "perplexity: a window of ", W, " tokens does not fit the runtime context of ",
             rt->n_ctx());
  }
  for (int32_t id : set.tokens) MH_CHECK(id >= 0 && id < V, "perplexity: token id ", id, " is outside the vocabulary (", V, ")");

  const int chunk = std::max(1, std::min(opt.chunk, W));
  std::vector<float> base_logits(base ? size_t(chunk) * size_t(V) : 0);
  std::vector<float> logits(size_t(chunk) * size_t(V));
  std::vector<BatchToken> batch;
  batch.reserve(size_t(chunk));
  RowStats base_rows, rows;
  base_rows.resize(size_t(chunk));
  rows.resize(size_t(chunk));

  EvalResult res;
  res.models.resize(models.size());
  int start = 0;
  if (opt.resume) {
    res = *opt.resume;
    MH_CHECK(res.models.size() == models.size(), "perplexity: the saved scores are for ", res.models.size(),
             " models, not ", models.size());
    start = int(res.models[0].window_nll.size());
    MH_CHECK(start <= set.n_windows(), "perplexity: the saved scores cover more windows than the data has");
  }
  const int first = set.first_scored, last = W - 1;  // scored logits rows: [first, last)
  std::vector<double> window_sum(models.size());
  double base_window_sum = 0;

  // Runs one chunk of window w through rt; the logits of the scored rows land in `out`.
  auto run_chunk = [&](LlamaRuntime* rt, int w, int c0, int c1, float* out) {
    batch.clear();
    for (int p = c0; p < c1; ++p) batch.push_back({set.token(w, p), p, 0, p >= first && p < last});
    rt->forward(batch, out);
  };
  // Log-normalizer, argmax and NLL of each scored row (and KL from the base rows when given).
  auto score_rows = [&](LlamaRuntime* rt, int w, int r0, int n, const float* lg, RowStats& st, const float* blg,
                        const RowStats* bst) {
    rt->pool().parallel_for(n, 1, [&](int64_t b, int64_t e, int) {
      for (int64_t j = b; j < e; ++j) {
        const float* row = lg + size_t(j) * size_t(V);
        st.summary[size_t(j)] = summarize_row(row, V);
        st.nll[size_t(j)] = row_nll(row, st.summary[size_t(j)], set.token(w, r0 + int(j) + 1));
        if (blg)
          st.kld[size_t(j)] = kl_divergence(blg + size_t(j) * size_t(V), bst->summary[size_t(j)].lse, row,
                                            st.summary[size_t(j)].lse, V);
      }
    });
  };
  auto accumulate = [&](ModelScores& ms, const RowStats& st, int n, double& wsum, const RowStats* bst) {
    for (int j = 0; j < n; ++j) {
      double v = st.nll[size_t(j)];
      wsum += v;
      ms.sum_nll += v;
      ms.sum_nll2 += v * v;
      if (bst) {
        ms.kld.push_back(float(st.kld[size_t(j)]));
        ms.top1_same += st.summary[size_t(j)].argmax == bst->summary[size_t(j)].argmax;
      }
    }
    ms.scored += n;
  };

  for (int w = start; w < set.n_windows(); ++w) {
    std::fill(window_sum.begin(), window_sum.end(), 0.0);
    base_window_sum = 0;
    for (int c0 = 0; c0 < W; c0 += chunk) {
      const int c1 = std::min(W, c0 + chunk);
      const int r0 = std::max(c0, first), r1 = std::min(c1, last);
      const int n = std::max(0, r1 - r0);
      if (base) {
        auto t = Clock::now();
        run_chunk(base, w, c0, c1, base_logits.data());
        if (n > 0) {
          score_rows(base, w, r0, n, base_logits.data(), base_rows, nullptr, nullptr);
          accumulate(res.base, base_rows, n, base_window_sum, nullptr);
        }
        res.base.seconds += since(t);
      }
      for (size_t m = 0; m < models.size(); ++m) {
        auto t = Clock::now();
        const float* lg = logits.data();
        if (models[m] == base) {
          lg = base_logits.data();  // the same model: its logits are the base's
        } else {
          run_chunk(models[m], w, c0, c1, logits.data());
        }
        if (n > 0) {
          score_rows(models[m], w, r0, n, lg, rows, base ? base_logits.data() : nullptr, base ? &base_rows : nullptr);
          accumulate(res.models[m], rows, n, window_sum[m], base ? &base_rows : nullptr);
        }
        res.models[m].seconds += since(t);
      }
    }
    const double per = double(set.scored_per_window());
    for (size_t m = 0; m < models.size(); ++m) {
      res.models[m].window_nll.push_back(window_sum[m] / per);
      res.models[m].tokens += W;
    }
    if (base) {
      res.base.window_nll.push_back(base_window_sum / per);
      res.base.tokens += W;
    }
    if (opt.on_window) opt.on_window(w + 1, res);
  }
  return res;
}

}  // namespace metharme::eval
