#include "serve/engine.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>

#include "chat/generate.h"
#include "chat/kv_context.h"
#include "util/error.h"

namespace metharme::serve {

namespace {
using clock = Job::clock;
double seconds(clock::time_point a, clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }
constexpr size_t kRecent = 64;       // finished jobs kept for /check
constexpr int kMaxRewinds = 256;     // banned-phrase rewinds per job before bans stop applying
}  // namespace

Engine::Engine(LlamaRuntime& rt, const Tokenizer& tok, const EngineOptions& opt)
    : rt_(&rt), tok_(&tok), gtokens_(grammar_token_texts(tok, rt.n_vocab())), opt_(opt),
      slots_(size_t(rt.kv().n_seq())), t_idle_(clock::now()) {
  MH_CHECK(tok.vocab_size() <= rt.n_vocab(), "the tokenizer has ", tok.vocab_size(), " tokens but the model only ",
           rt.n_vocab());
  opt_.prefill_chunk = std::max(1, opt_.prefill_chunk);
  opt_.max_queue = std::max(0, opt_.max_queue);
  stats_.slots = n_slots();
  const int rows = init_spec();  // logits rows per slot and step
  batch_.reserve(size_t(opt_.prefill_chunk + n_slots() * rows));
  row_slot_.reserve(size_t(n_slots()));
  drawn_.reserve(size_t(n_slots()));
  logits_.resize(size_t(n_slots()) * size_t(rows) * size_t(rt.n_vocab()));
  draw_error_.resize(size_t(n_slots()));
  draw_status_.resize(size_t(n_slots()));
  if (const char* f = std::getenv("METHARME_TEST_ENGINE_FAULT")) fault_after_ = std::max(0, std::atoi(f));
  thread_ = std::thread([this] { run(); });
}

Engine::~Engine() { shutdown(); }

void Engine::shutdown() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

std::shared_ptr<Job> Engine::submit(GenSpec spec) {
  std::vector<GenSpec> v;
  v.push_back(std::move(spec));
  auto jobs = submit(std::move(v));
  return jobs.empty() ? nullptr : jobs[0];
}

std::vector<std::shared_ptr<Job>> Engine::submit(std::vector<GenSpec> specs) {
  for (const GenSpec& s : specs) {
    MH_CHECK(!s.prompt.empty(), "the prompt has no tokens");
    MH_CHECK(s.max_new >= 1, "max_new must be at least 1");
    MH_CHECK(int(s.prompt.size()) + s.max_new <= n_ctx(), "the prompt (", s.prompt.size(), " tokens) and ", s.max_new,
             " new tokens exceed the context of ", n_ctx(), " tokens");
    for (int id : s.prompt) MH_CHECK(id >= 0 && id < tok_->vocab_size(), "token id ", id, " is outside the vocabulary");
    std::string bad = sampler_params_error(s.sampler, rt_->n_vocab());
    MH_CHECK(bad.empty(), bad);
    bad = sampler_bans_error(s.sampler, rt_->n_vocab(), tok_->eos());
    MH_CHECK(bad.empty(), bad);
  }
  std::vector<std::shared_ptr<Job>> jobs;
  {
    std::lock_guard<std::mutex> lk(mu_);
    if (stop_) return jobs;
    int free_slots = 0;
    for (const Slot& s : slots_)
      if (!s.job) ++free_slots;
    // A request may wait only if the queue has room; it does not wait when a slot is free now.
    int need_queue = int(queue_.size()) + int(specs.size()) - free_slots;
    if (need_queue > opt_.max_queue) return jobs;
    for (GenSpec& s : specs) {
      jobs.push_back(std::make_shared<Job>(std::move(s), next_id_++));
      queue_.push_back(jobs.back());
    }
    stats_.queued = int(queue_.size());
  }
  cv_.notify_all();
  return jobs;
}

Engine::AbortCount Engine::abort(const std::string& genkey, const std::string& client) {
  AbortCount n;
  std::vector<std::shared_ptr<Job>> dropped;
  {
    std::lock_guard<std::mutex> lk(mu_);
    auto matches = [&](const Job& j) {
      return genkey.empty() ? j.spec().genkey.empty() && j.spec().client == client : j.spec().genkey == genkey;
    };
    for (Slot& s : slots_)
      if (s.job && !s.job->cancelled() && matches(*s.job)) {
        s.job->cancel();
        ++n.running;
      }
    for (auto it = queue_.begin(); it != queue_.end();) {
      if (matches(**it)) {
        dropped.push_back(*it);
        it = queue_.erase(it);
        ++n.queued;
      } else {
        ++it;
      }
    }
    for (auto& j : dropped) remember_locked(j);
    stats_.queued = int(queue_.size());
  }
  for (auto& j : dropped) {
    j->cancel();
    j->end(Finish::kAbort, "");
  }
  return n;
}

std::shared_ptr<Job> Engine::find(const std::string& genkey, const std::string& client) const {
  std::lock_guard<std::mutex> lk(mu_);
  std::shared_ptr<Job> best;
  auto consider = [&](const std::shared_ptr<Job>& j) {
    bool ok = genkey.empty() ? j->spec().genkey.empty() && j->spec().client == client : j->spec().genkey == genkey;
    if (ok && (!best || j->id() > best->id())) best = j;
  };
  for (const Slot& s : slots_)
    if (s.job) consider(s.job);
  for (const auto& j : queue_) consider(j);
  for (const auto& j : recent_) consider(j);
  return best;
}

EngineStats Engine::stats() const {
  std::lock_guard<std::mutex> lk(mu_);
  EngineStats s = stats_;
  s.running = 0;
  for (const Slot& sl : slots_)
    if (sl.job) ++s.running;
  s.queued = int(queue_.size());
  if (idle_) s.idle_s += seconds(t_idle_, clock::now());
  s.kv_used = kv_used_.load(std::memory_order_relaxed);
  s.kv_total = int64_t(n_slots()) * n_ctx();
  return s;
}

void Engine::remember_locked(const std::shared_ptr<Job>& job) {
  recent_.push_back(job);
  while (recent_.size() > kRecent) recent_.pop_front();
}

void Engine::admit_locked() {
  while (!queue_.empty()) {
    // Prefer the free slot whose KV serves most of this prompt; then the least recently used.
    const GenSpec& spec = queue_.front()->spec();
    int best = -1, best_reuse = 0;
    for (size_t i = 0; i < slots_.size(); ++i) {
      const Slot& s = slots_[i];
      if (s.job) continue;
      KvPlan plan = plan_kv_reuse(s.kv, spec.prompt, spec.context_shift ? KvContext::kMinShift : 0);
      int reuse = plan.keep + plan.shifted;
      // A few shared tokens (BOS, a common opening) are not worth evicting another chat's cache
      // for: below a quarter of the prompt, the least recently used slot is taken instead.
      if (4 * reuse < int(spec.prompt.size())) reuse = 0;
      if (best < 0 || reuse > best_reuse || (reuse == best_reuse && s.last_used < slots_[size_t(best)].last_used)) {
        best = int(i);
        best_reuse = reuse;
      }
    }
    if (best < 0) return;
    auto job = queue_.front();
    queue_.pop_front();
    start(slots_[size_t(best)], std::move(job));
  }
}

void Engine::start(Slot& s, std::shared_ptr<Job> job) {
  const GenSpec& spec = job->spec();
  const int P = int(spec.prompt.size());
  bool prompt_has_text = false;
  for (int id : spec.prompt)
    if (!tok_->is_control(id)) prompt_has_text = true;
  try {
    SamplerParams sp = spec.sampler;
    if (sp.n_ctx == 0) sp.n_ctx = n_ctx();  // the rep-pen and DRY windows end at the context
    s.sampler.emplace(sp, rt_->n_vocab(), tok_->eos(), &gtokens_);
    s.out.emplace(*tok_, !prompt_has_text, spec.stop, spec.trim_stop, spec.banned_phrases);
    s.out->set_min_tokens(spec.min_tokens);
  } catch (const std::exception& e) {
    // The request cannot run (its settings leave nothing to sample): it fails alone, the slot
    // stays free and keeps its KV.
    s.sampler.reset();
    s.out.reset();
    remember_locked(job);
    job->set_error_status(422);
    job->end(Finish::kError, "", e.what());
    return;
  }
  // Reuse the slot's KV: the common prefix, and after a dropped span (a chat whose oldest turns
  // were cut) the following run of tokens, shifted down into place.
  KvPlan plan = plan_kv_reuse(s.kv, spec.prompt, spec.context_shift ? KvContext::kMinShift : 0);
  const int seq = int(&s - slots_.data());
  if (plan.shifted > 0) rt_->kv().shift(seq, plan.keep + plan.drop, plan.keep, plan.shifted, rt_->rope());
  int reuse = plan.keep + plan.shifted;
  s.kv.assign(spec.prompt.begin(), spec.prompt.begin() + reuse);
  s.kv.reserve(size_t(P + spec.max_new));
  s.prompt_done = reuse;
  s.pending = -1;
  s.history.assign(spec.prompt.begin(), spec.prompt.end());
  s.history.reserve(size_t(P + spec.max_new));
  s.at_start = !prompt_has_text;
  s.sampler->restart_grammar(s.at_start);
  s.lps.clear();
  s.lps_published = 0;
  s.bans.clear();
  s.rewinds = 0;
  s.committed = 0;
  s.t_start = clock::now();
  s.has_first = false;
  // Speculation keeps every sampler's history exact; only Mirostat with banned phrases is left
  // out, as a rewind would leave mu moved by drafts drawn after the banned token.
  s.spec_on = s.drafter && !(spec.sampler.mirostat != 0 && !spec.banned_phrases.empty());
  s.spec = SpecStats{};
  s.n_draft = 0;
  JobStats st;
  st.prompt_tokens = P;
  st.cached_tokens = reuse;
  st.shifted_tokens = plan.shifted;
  st.prompt_tokens_cut = spec.prompt_tokens_cut;
  st.seed = spec.sampler.seed;
  st.queue_s = seconds(job->submitted(), s.t_start);
  job->set_stats(st);
  s.job = std::move(job);
}

void Engine::publish(Slot& s) {
  size_t c = s.out->committed();
  size_t n = std::min(size_t(s.out->tokens_within(c)), s.lps.size());
  if (n > s.lps_published) {
    s.job->append_logprobs(s.lps.data() + s.lps_published, n - s.lps_published);
    s.lps_published = n;
  }
  if (c <= s.committed) return;
  s.job->append(std::string_view(s.out->text()).substr(s.committed, c - s.committed));
  s.committed = c;
}

void Engine::finish(Slot& s, Finish f, const std::string& error, int status) {
  auto now = clock::now();
  std::shared_ptr<Job> job = s.job;
  JobStats st = job->stats();
  st.generated = s.out ? s.out->size() + (f == Finish::kEos ? 1 : 0) : 0;
  st.prompt_s = seconds(s.t_start, s.has_first ? s.t_first : now);
  st.gen_s = s.has_first ? seconds(s.t_first, now) : 0;
  st.first_token_at = s.has_first ? s.t_first : now;
  st.ended_at = now;
  job->set_stats(st);
  std::string text = s.out ? s.out->final_text() : std::string();
  std::vector<int> tokens = s.out ? s.out->tokens() : std::vector<int>();
  if (f == Finish::kEos) tokens.push_back(tok_->eos());
  if (s.lps.size() > s.lps_published) job->append_logprobs(s.lps.data() + s.lps_published, s.lps.size() - s.lps_published);
  if (!job->spec().quiet)
    std::fprintf(stderr, "serve: request %llu: %d prompt tokens (%d cached) in %.2f s, %d tokens in %.2f s, %s\n",
                 static_cast<unsigned long long>(job->id()), st.prompt_tokens, st.cached_tokens, st.prompt_s,
                 st.generated, st.gen_s, finish_name(f));
  if (!job->spec().quiet && s.spec.steps > 0)
    std::fprintf(stderr, "serve: request %llu: speculative: %lld steps, %lld of %lld drafts accepted\n",
                 static_cast<unsigned long long>(job->id()), static_cast<long long>(s.spec.steps),
                 static_cast<long long>(s.spec.accepted), static_cast<long long>(s.spec.drafted));
  {
    std::lock_guard<std::mutex> lk(mu_);
    s.job.reset();
    s.last_used = ++clock_;
    remember_locked(job);
    stats_.total_jobs++;
    stats_.total_tokens += uint64_t(st.generated);
    stats_.last = st;
    stats_.last_finish = f;
    stats_.spec.add(s.spec);
  }
  store_kv_used();  // before the end: a client that sees it may read /metrics at once
  if (opt_.metrics)
    opt_.metrics->observe_job(st, f, st.generated - (f == Finish::kEos ? 1 : 0), seconds(job->submitted(), now),
                              s.has_first);
  // Figures first, then the end: a client that sees the end may read /perf at once.
  if (f == Finish::kError) job->set_error_status(status);
  job->end(f, std::move(text), error, std::move(tokens));
  s.sampler.reset();
  s.out.reset();
  s.pending = -1;
  if (f == Finish::kError) s.kv.clear();  // the failed step may have stored part of a batch
}

void Engine::store_kv_used() {
  int64_t used = 0;
  for (const Slot& s : slots_) used += int64_t(s.kv.size());
  kv_used_.store(used, std::memory_order_relaxed);
}

int Engine::draw(Slot& s, float* logits, int j, int draft) {
  size_t at = size_t(s.out->size() + j);
  if (at < s.bans.size())
    for (int id : s.bans[at]) logits[id] = -INFINITY;
  if (int(at) < s.job->spec().min_tokens && s.job->spec().stop_at_eos) logits[tok_->eos()] = -INFINITY;
  return s.sampler->sample_draft(logits, s.history, draft);
}

void Engine::sample(Slot& s, int tok, const StepLogprobs* lp) {
  const GenSpec& spec = s.job->spec();
  if (fault_after_ > 0 && int(s.out->size()) + 1 == fault_after_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(500));  // a stream has sent the first tokens
    throw std::runtime_error("fault injected by METHARME_TEST_ENGINE_FAULT");
  }
  if (!s.has_first) {
    s.t_first = clock::now();
    s.has_first = true;
  }
  // With a grammar, EOS is drawn only where the text is a whole match (or nothing else fits).
  if (tok == tok_->eos() && (spec.stop_at_eos || s.sampler->has_grammar())) return finish(s, Finish::kEos);
  if (spec.sampler.logprobs != SamplerParams::Logprobs::kOff) s.lps.push_back(*lp);
  s.history.push_back(tok);
  auto ev = s.out->push(tok);
  if (ev == OutputText::Event::kBanned && s.rewinds < kMaxRewinds) {
    // Rewind to the token where the phrase begins, ban that token there, and evaluate the token
    // before it again to get its logits back.
    ++s.rewinds;
    int t = s.out->banned_token();
    if (s.bans.size() <= size_t(t)) s.bans.resize(size_t(t) + 1);
    s.bans[size_t(t)].push_back(s.out->tokens()[size_t(t)]);
    s.out->rewind(t);
    s.sampler->replay_grammar(s.out->tokens(), s.at_start);
    if (s.lps.size() > size_t(t)) s.lps.resize(size_t(t));
    const int P = int(spec.prompt.size());
    s.history.resize(size_t(P + t));
    s.kv.resize(size_t(P + t - 1));
    s.pending = t > 0 ? s.out->tokens()[size_t(t - 1)] : spec.prompt.back();
    return;
  }
  if (ev == OutputText::Event::kStop) return finish(s, Finish::kStop);
  if (s.out->size() >= spec.max_new || int(s.kv.size()) >= n_ctx()) return finish(s, Finish::kLength);
  s.pending = tok;
  publish(s);
}

void Engine::run() {
  for (;;) {
    try {
      loop();
      return;
    } catch (const std::exception& e) {
      recover(e.what());
    } catch (...) {
      recover("unknown exception");
    }
  }
}

void Engine::recover(const std::string& why) {
  std::fprintf(stderr, "serve: engine error: %s; failing the running requests\n", why.c_str());
  for (Slot& s : slots_) {
    if (!s.job) continue;
    try {
      finish(s, Finish::kError, "internal error: " + why, 500);
    } catch (...) {
      std::lock_guard<std::mutex> lk(mu_);
      s.job.reset();
    }
    s.kv.clear();
    s.pending = -1;
  }
}

void Engine::loop() {
  std::vector<int> prefilling;
  prefilling.reserve(slots_.size());
  for (;;) {
    {
      std::unique_lock<std::mutex> lk(mu_);
      auto busy = [&] {
        for (const Slot& s : slots_)
          if (s.job) return true;
        return false;
      };
      admit_locked();
      if (!busy() && !stop_) {
        if (!idle_) {
          idle_ = true;
          t_idle_ = clock::now();
        }
        cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
        admit_locked();
      }
      if (stop_) break;
      if (idle_) {
        stats_.idle_s += seconds(t_idle_, clock::now());
        idle_ = false;
      }
    }
    for (Slot& s : slots_)
      if (s.job && s.job->cancelled()) finish(s, Finish::kAbort);

    // One step: the next token of every decoding slot, then prompt tokens in fair shares.
    batch_.clear();
    row_slot_.clear();
    n_rows_ = 0;
    prefilling.clear();
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      if (!s.job) continue;
      if (s.pending >= 0) {
        feed_decode(s, int(i));
      } else if (s.prompt_done < int(s.job->spec().prompt.size())) {
        prefilling.push_back(int(i));
      }
    }
    if (!prefilling.empty()) {
      int budget = std::max(1, opt_.prefill_chunk - int(batch_.size()));
      const int n_pre = int(prefilling.size());
      int share = std::max(1, budget / n_pre);
      // Two passes from a rotating start: equal shares first, then what is left in order.
      for (int pass = 0; pass < 2 && budget > 0; ++pass) {
        for (int k = 0; k < n_pre && budget > 0; ++k) {
          Slot& s = slots_[size_t(prefilling[size_t((k + rr_) % n_pre)])];
          const auto& prompt = s.job->spec().prompt;
          int left = int(prompt.size()) - s.prompt_done;
          int take = std::min({left, budget, pass == 0 ? share : left});
          int seq = int(&s - slots_.data());
          for (int j = 0; j < take; ++j) {
            int p = s.prompt_done++;
            bool last = p + 1 == int(prompt.size());
            batch_.push_back({prompt[size_t(p)], int32_t(p), int32_t(seq), last});
            s.kv.push_back(prompt[size_t(p)]);
            if (last) {
              row_slot_.push_back(seq);
              s.row = n_rows_++;
              s.n_draft = 0;
            }
          }
          budget -= take;
        }
      }
      rr_ = (rr_ + 1) % n_pre;
    }
    if (batch_.empty()) continue;
    forward_step();
    if (opt_.metrics) opt_.metrics->observe_step(int(batch_.size()));
    // Each slot samples from its own rows with its own sampler, so the draws run in parallel (a
    // draw over 32000 fresh logits is ~0.25 ms: 2 ms per 8-slot step on one thread); the results
    // are then handled in row order.
    // A draw that fails (no token can be drawn) fails its own request only.
    drawn_.assign(row_slot_.size(), -1);
    rt_->pool().run(int(row_slot_.size()), [&](int r, int) {
      Slot& s = slots_[size_t(row_slot_[size_t(r)])];
      if (!s.job) return;
      try {
        draw_step(s);
        drawn_[size_t(r)] = 0;
      } catch (const SamplingError& e) {
        draw_error_[size_t(r)] = e.what();
        draw_status_[size_t(r)] = e.model_fault() ? 500 : 422;
      } catch (const std::exception& e) {
        draw_error_[size_t(r)] = e.what();
        draw_status_[size_t(r)] = 500;
      }
    });
    for (size_t r = 0; r < row_slot_.size(); ++r) {
      Slot& s = slots_[size_t(row_slot_[r])];
      if (!s.job) continue;
      if (drawn_[r] < 0) {
        finish(s, Finish::kError, draw_error_[r].empty() ? "no token was drawn" : draw_error_[r], draw_status_[r]);
        draw_error_[r].clear();
      } else {
        take_step(s);
      }
    }
    store_kv_used();
  }
  // Shutting down: every request ends as aborted.
  for (Slot& s : slots_)
    if (s.job) finish(s, Finish::kAbort);
  std::deque<std::shared_ptr<Job>> left;
  {
    std::lock_guard<std::mutex> lk(mu_);
    left.swap(queue_);
  }
  for (auto& j : left) j->end(Finish::kAbort, "");
}

}  // namespace metharme::serve
