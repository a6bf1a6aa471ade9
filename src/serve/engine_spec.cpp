// The engine's per-slot decode step, with speculative drafts when the slot has a drafter: the
// pending token and up to draft_max drafts go into the shared batch with logits at every one;
// draw_step() verifies them in order (Sampler::sample_draft, with each draft's q from the drafter)
// and take_step() handles the kept tokens exactly as plain decoding would, then drops the
// rejected drafts' KV positions.
#include <algorithm>

#include "serve/engine.h"
#include "util/error.h"

namespace metharme::serve {

int Engine::init_spec() {
  const int rows = opt_.spec.enabled() ? opt_.spec.draft_max + 1 : 1;
  if (opt_.spec.enabled()) {
    if (opt_.spec.draft_model)
      MH_CHECK(opt_.spec.draft_model->kv().n_seq() >= n_slots(), "the draft model has ",
               opt_.spec.draft_model->kv().n_seq(), " sequences for ", n_slots(), " slots");
    for (size_t i = 0; i < slots_.size(); ++i) {
      slots_[i].drafter = std::make_unique<Drafter>(opt_.spec, int(i));
      slots_[i].drafts.resize(size_t(opt_.spec.draft_max));
    }
  }
  for (Slot& sl : slots_) {
    sl.drawn.reserve(size_t(rows));
    sl.drawn_lps.resize(size_t(rows));
  }
  return rows;
}

void Engine::feed_decode(Slot& s, int seq) {
  const GenSpec& spec = s.job->spec();
  s.base = int(s.kv.size());
  s.n_draft = 0;
  if (s.spec_on) {
    // Drafts end where the output or the context would, so a full acceptance leaves room for
    // the token drawn after them (and its position in the cache).
    const int k = std::min({int(s.drafts.size()), spec.max_new - s.out->size() - 1, n_ctx() - s.base - 2});
    if (k > 0) s.n_draft = s.drafter->draft(s.history, k, s.drafts.data());
  }
  s.row = n_rows_;
  n_rows_ += s.n_draft + 1;
  row_slot_.push_back(seq);
  batch_.push_back({s.pending, int32_t(s.base), int32_t(seq), true});
  s.kv.push_back(s.pending);
  for (int j = 0; j < s.n_draft; ++j) {
    const int d = s.drafts[size_t(j)];
    batch_.push_back({d, int32_t(s.base + 1 + j), int32_t(seq), true});
    s.kv.push_back(d);
  }
  s.pending = -1;
  if (s.n_draft > 0) {
    s.spec.steps++;
    s.spec.drafted += s.n_draft;
  }
}

void Engine::draw_step(Slot& s) {
  const GenSpec& spec = s.job->spec();
  const size_t V = size_t(rt_->n_vocab()), h0 = s.history.size();
  const bool lp = spec.sampler.logprobs != SamplerParams::Logprobs::kOff;
  s.drawn.clear();
  // Row j follows j kept drafts: the history the samplers see grows with them, as it would have.
  for (int j = 0; j <= s.n_draft; ++j) {
    const int d = j < s.n_draft ? s.drafts[size_t(j)] : -1;
    const int tok = draw(s, logits_.data() + size_t(s.row + j) * V, j, d);
    s.drawn.push_back(tok);
    if (lp) s.drawn_lps[size_t(j)] = s.sampler->last_logprobs();
    if (tok != d || (tok == tok_->eos() && (spec.stop_at_eos || s.sampler->has_grammar()))) break;
    s.history.push_back(tok);
  }
  s.history.resize(h0);
}

void Engine::take_step(Slot& s) {
  const int n_draft = s.n_draft, base = s.base;
  int kept = 0;
  for (size_t j = 0; j < s.drawn.size(); ++j) {
    const int tok = s.drawn[j];
    const bool accepted = int(j) < n_draft && tok == s.drafts[j];
    const int rewinds = s.rewinds;
    if (accepted) {
      ++kept;
      s.spec.accepted++;  // counted before sample(), which may end the job and file its figures
    }
    sample(s, tok, &s.drawn_lps[j]);
    if (s.rewinds != rewinds) return;  // a banned phrase: sample() set the KV and pending token
    if (!s.job) break;
    if (accepted) s.pending = -1;  // already in the cache; the next drawn token follows it
  }
  // The pending token and the kept drafts stay; the rejected drafts' positions are overwritten.
  if (n_draft > 0 && s.kv.size() > size_t(base + 1 + kept)) s.kv.resize(size_t(base + 1 + kept));
}

}  // namespace metharme::serve
