#include "chat/kv_context.h"

#include <algorithm>

#include "util/error.h"

namespace metharme {

namespace {
size_t common_prefix(std::span<const int> a, std::span<const int> b) {
  size_t n = std::min(a.size(), b.size()), i = 0;
  while (i < n && a[i] == b[i]) ++i;
  return i;
}
}  // namespace

KvPlan plan_kv_reuse(std::span<const int> cached, std::span<const int> prompt, int min_shift) {
  KvPlan plan;
  if (prompt.empty()) return plan;
  // At least the last prompt token is evaluated: its logits are the point of the exercise.
  const size_t limit = prompt.size() - 1;
  const size_t keep = std::min(common_prefix(cached, prompt), limit);
  plan.keep = int(keep);
  if (min_shift > 0 && keep < limit && keep < cached.size()) {
    // Try every dropped span length; keep the one that lines up the most following tokens.
    size_t best = 0, best_drop = 0;
    auto want = prompt.subspan(keep, limit - keep);
    for (size_t drop = 1; keep + drop < cached.size() && cached.size() - keep - drop > best; ++drop) {
      size_t m = common_prefix(cached.subspan(keep + drop), want);
      if (m > best) {
        best = m;
        best_drop = drop;
      }
    }
    if (best >= size_t(min_shift)) {
      plan.drop = int(best_drop);
      plan.shifted = int(best);
    }
  }
  plan.evaluate = int(prompt.size()) - plan.keep - plan.shifted;
  return plan;
}

KvContext::KvContext(LlamaRuntime& rt, int seq) : rt_(&rt), seq_(seq) {
  MH_CHECK(seq >= 0 && seq < rt.kv().n_seq(), "KV sequence ", seq, " does not exist (", rt.kv().n_seq(), " slots)");
  tokens_.reserve(size_t(rt.n_ctx()));
}

const float* KvContext::sync(std::span<const int> prompt, bool allow_shift, const std::atomic<bool>* abort) {
  MH_CHECK(!prompt.empty(), "the prompt has no tokens");
  if (int(prompt.size()) > rt_->n_ctx())
    fail("the prompt (", prompt.size(), " tokens) is longer than the context (", rt_->n_ctx(), " tokens)");
  plan_ = plan_kv_reuse(tokens_, prompt, allow_shift ? kMinShift : 0);
  if (plan_.shifted > 0) rt_->kv().shift(seq_, plan_.keep + plan_.drop, plan_.keep, plan_.shifted, rt_->rope());
  // The cache is only known to hold what has been evaluated so far.
  size_t done = size_t(plan_.keep + plan_.shifted);
  tokens_.assign(prompt.begin(), prompt.begin() + std::ptrdiff_t(done));
  const float* logits = nullptr;
  while (done < prompt.size()) {
    if (abort && abort->load(std::memory_order_relaxed)) return nullptr;
    size_t n = abort ? std::min(kAbortChunk, prompt.size() - done) : prompt.size() - done;
    logits = rt_->eval(prompt.subspan(done, n), int(done), seq_);
    tokens_.insert(tokens_.end(), prompt.begin() + std::ptrdiff_t(done), prompt.begin() + std::ptrdiff_t(done + n));
    done += n;
  }
  return logits;
}

const float* KvContext::append(int id) {
  MH_CHECK(size() < rt_->n_ctx(), "the context is full (", rt_->n_ctx(), " tokens)");
  const float* logits = rt_->eval(std::span<const int>(&id, 1), size(), seq_);
  tokens_.push_back(id);
  return logits;
}

const float* KvContext::extend(std::span<const int> ids) {
  MH_CHECK(!ids.empty(), "extend: no tokens");
  MH_CHECK(size() + int(ids.size()) <= rt_->n_ctx(), "the context is full (", rt_->n_ctx(), " tokens)");
  batch_.clear();
  for (size_t i = 0; i < ids.size(); ++i) batch_.push_back({ids[i], int32_t(size() + int(i)), int32_t(seq_), true});
  const size_t need = ids.size() * size_t(rt_->n_vocab());
  if (rows_.size() < need) rows_.resize(need);
  rt_->forward(batch_, rows_.data());
  tokens_.insert(tokens_.end(), ids.begin(), ids.end());
  return rows_.data();
}

void KvContext::truncate(int n) {
  MH_CHECK(n >= 0 && n <= size(), "truncate: ", n, " is outside the cached tokens (", size(), ")");
  tokens_.resize(size_t(n));
}

}  // namespace metharme
