#include "sampling/sampler.h"

#include <algorithm>
#include <cmath>
#include <sstream>

#include "util/error.h"

namespace metharme {

int argmax(const float* x, int n) {
  int best = 0;
  for (int i = 1; i < n; ++i)
    if (x[i] > x[best]) best = i;
  return best;
}

const char* sampler_name(int id) {
  static const char* names[kSamplerCount] = {"top_k", "top_a", "top_p", "tfs", "typical", "temperature", "rep_pen"};
  return id >= 0 && id < kSamplerCount ? names[id] : "?";
}

std::vector<int> normalize_order(const std::vector<int>& order) {
  std::vector<int> o = order;
  if (o.size() == 6 && std::find(o.begin(), o.end(), 6) == o.end()) o.insert(o.begin(), 6);
  return o;
}

std::vector<int> parse_sampler_order(const std::string& s) {
  std::vector<int> out;
  std::string t = s;
  std::replace(t.begin(), t.end(), ',', ' ');
  std::istringstream in(t);
  std::string item;
  while (in >> item) {
    size_t used = 0;
    int v = -1;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size()) fail("sampler order: '", item, "' is not a sampler id (0..6)");
    out.push_back(v);
  }
  return out;
}

namespace {
// The fields of the samplers outside sampler_order.
std::string extra_params_error(const SamplerParams& p, int n_vocab) {
  auto fin = [](float v) { return std::isfinite(v); };
  if (p.n_ctx < 0) return cat("n_ctx must be >= 0 (got ", p.n_ctx, ")");
  if (p.mirostat < 0 || p.mirostat > 2) return cat("mirostat must be 0, 1 or 2 (got ", p.mirostat, ")");
  if (!(p.mirostat_tau >= 0) || !fin(p.mirostat_tau))
    return cat("mirostat_tau must be >= 0 (got ", p.mirostat_tau, ")");
  if (!(p.mirostat_eta >= 0) || !fin(p.mirostat_eta))
    return cat("mirostat_eta must be >= 0 (got ", p.mirostat_eta, ")");
  if (!(p.dry_multiplier >= 0) || !fin(p.dry_multiplier))
    return cat("dry_multiplier must be >= 0 (got ", p.dry_multiplier, ")");
  if (!(p.dry_base > 0) || !fin(p.dry_base)) return cat("dry_base must be > 0 (got ", p.dry_base, ")");
  if (p.dry_allowed_length < 0) return cat("dry_allowed_length must be >= 0 (got ", p.dry_allowed_length, ")");
  for (const auto& seq : p.dry_breakers)
    for (int id : seq)
      if (id < 0 || id >= n_vocab) return cat("dry_sequence_breakers: token ", id, " is outside the vocabulary");
  if (!fin(p.xtc_threshold)) return "xtc_threshold must be finite";
  if (!(p.xtc_probability >= 0 && p.xtc_probability <= 1))
    return cat("xtc_probability must be in [0, 1] (got ", p.xtc_probability, ")");
  if (!fin(p.dynatemp_range) || !fin(p.dynatemp_exponent)) return "dynatemp_range and dynatemp_exponent must be finite";
  if (!(p.smoothing_factor >= 0) || !fin(p.smoothing_factor))
    return cat("smoothing_factor must be >= 0 (got ", p.smoothing_factor, ")");
  if (!fin(p.smoothing_curve)) return "smoothing_curve must be finite";
  if (!(p.nsigma >= 0) || !fin(p.nsigma)) return cat("nsigma must be >= 0 (got ", p.nsigma, ")");
  return "";
}

// One draw's pipeline, in KoboldCpp's order (gpttype_adapter.cpp SampleLogits).
enum class Stage : uint8_t {
  kDry,             // DRY, on every token not banned (KoboldCpp: before its top-5000 cut)
  kKeepMostLikely,  // the kMaxCandidates most likely
  kOrdered,         // the sampler_order slots; slot 5 is temperature_slot()
  kXtc,             // XTC, after every slot
  kRepPen,          // Mirostat only: rep-pen,
  kTemperature,     //   temperature and smoothing,
  kMirostat,        //   the Mirostat cut (the draw then moves mu)
};
constexpr Stage kChain[] = {Stage::kDry, Stage::kKeepMostLikely, Stage::kOrdered, Stage::kXtc};
constexpr Stage kMirostatChain[] = {Stage::kDry, Stage::kKeepMostLikely, Stage::kRepPen, Stage::kTemperature,
                                    Stage::kMirostat};
}  // namespace

std::string sampler_params_error(const SamplerParams& p, int n_vocab) {
  auto in01 = [](float v) { return v >= 0 && v <= 1; };  // false for NaN
  if (!(p.temperature >= 0) || !std::isfinite(p.temperature))
    return cat("temperature must be >= 0 (got ", p.temperature, ")");
  if (p.top_k < 0) return cat("top_k must be >= 0 (got ", p.top_k, ")");
  if (!(p.top_a >= 0) || !std::isfinite(p.top_a)) return cat("top_a must be >= 0 (got ", p.top_a, ")");
  if (!in01(p.top_p)) return cat("top_p must be in [0, 1] (got ", p.top_p, ")");
  if (!in01(p.min_p)) return cat("min_p must be in [0, 1] (got ", p.min_p, ")");
  if (!in01(p.typical)) return cat("typical must be in [0, 1] (got ", p.typical, ")");
  if (!in01(p.tfs)) return cat("tfs must be in [0, 1] (got ", p.tfs, ")");
  if (!(p.rep_pen > 0) || !std::isfinite(p.rep_pen)) return cat("rep_pen must be > 0 (got ", p.rep_pen, ")");
  if (p.rep_pen_range < 0) return cat("rep_pen_range must be >= 0 (got ", p.rep_pen_range, ")");
  if (!(p.rep_pen_slope >= 0) || !std::isfinite(p.rep_pen_slope))
    return cat("rep_pen_slope must be >= 0 (got ", p.rep_pen_slope, ")");
  if (!std::isfinite(p.presence_penalty)) return "presence_penalty must be finite";
  if (std::string e = extra_params_error(p, n_vocab); !e.empty()) return e;
  if (p.top_logprobs < 0 || p.top_logprobs > kMaxTopLogprobs)
    return cat("top_logprobs must be in [0, ", kMaxTopLogprobs, "] (got ", p.top_logprobs, ")");
  std::vector<int> order = normalize_order(p.sampler_order);
  bool seen[kSamplerCount] = {};
  for (int id : order) {
    if (id < 0 || id >= kSamplerCount) return cat("sampler_order: ", id, " is not a sampler id (0..6)");
    if (seen[id]) return cat("sampler_order: ", id, " (", sampler_name(id), ") appears twice");
    seen[id] = true;
  }
  for (int id : p.banned_tokens)
    if (id < 0 || id >= n_vocab) return cat("banned token ", id, " is outside the vocabulary (", n_vocab, ")");
  for (const auto& [id, bias] : p.logit_bias) {
    if (id < 0 || id >= n_vocab) return cat("logit_bias: token ", id, " is outside the vocabulary (", n_vocab, ")");
    if (std::isnan(bias)) return cat("logit_bias: the bias of token ", id, " is not a number");
  }
  return "";
}

std::string sampler_bans_error(const SamplerParams& p, int n_vocab, int eos_id) {
  if (n_vocab <= 0 || p.banned_tokens.size() + 1 < size_t(n_vocab)) return "";  // cannot cover all
  std::vector<uint8_t> banned(size_t(n_vocab), 0);
  for (int id : p.banned_tokens)
    if (id >= 0 && id < n_vocab) banned[size_t(id)] = 1;
  if (p.ban_eos && eos_id >= 0 && eos_id < n_vocab) banned[size_t(eos_id)] = 1;
  if (std::count(banned.begin(), banned.end(), 0) > 0) return "";
  return cat("every token of the vocabulary (", n_vocab, ") is banned", p.ban_eos ? " (EOS by ban_eos_token)" : "",
             ": nothing could be generated");
}

Sampler::Sampler(const SamplerParams& p, int n_vocab, int eos_id, const grammar::TokenTable* tokens)
    : p_(p),
      order_(normalize_order(p.sampler_order)),
      n_vocab_(n_vocab),
      eos_(eos_id),
      rng_(p.seed),
      mu_(2.0 * double(p.mirostat_tau)),
      dry_(p.dry_multiplier, p.dry_base, p.dry_allowed_length, p.dry_penalty_last_n, p.dry_breakers),
      banned_(size_t(n_vocab)),
      seen_(size_t(n_vocab)) {
  MH_CHECK(n_vocab > 0, "sampler: empty vocabulary");
  std::string err = sampler_params_error(p, n_vocab);
  if (!err.empty()) fail("sampler: ", err);
  cand_.reserve(size_t(n_vocab));
  for (int id : p.banned_tokens) banned_[size_t(id)] = 1;
  if (p.ban_eos && eos_id >= 0 && eos_id < n_vocab) banned_[size_t(eos_id)] = 1;
  size_t allowed = size_t(std::count(banned_.begin(), banned_.end(), 0));
  MH_CHECK(allowed > 0, "sampler: every token of the vocabulary is banned");
  if (p.grammar) {
    MH_CHECK(tokens, "sampler: a grammar needs the vocabulary's token texts");
    matcher_.emplace(p.grammar, *tokens);
  }
  last_.top.reserve(kMaxTopLogprobs);
}

void Sampler::restart_grammar(bool skip_space) {
  if (!matcher_) return;
  matcher_->reset();
  matcher_->set_skip_leading_space(skip_space);
  grammar_stuck_ = false;
}

void Sampler::replay_grammar(const std::vector<int>& output, bool skip_space) {
  if (!matcher_) return;
  restart_grammar(skip_space);
  for (int id : output) matcher_->accept(id);
}

bool Sampler::grammar_keep() {
  const bool eos_ok = matcher_->can_end();
  auto& items = cand_.items;
  size_t n = 0;
  for (size_t i = 0; i < items.size(); ++i)
    if (items[i].id == eos_ ? eos_ok : matcher_->allows(items[i].id)) items[n++] = items[i];
  items.resize(n);
  return n > 0;
}

void Sampler::temperature_slot(Candidates& c) {
  if (p_.dynatemp_range != 0) {
    const float lo = std::max(0.0f, p_.temperature - p_.dynatemp_range);
    const float hi = std::max(0.0f, p_.temperature + p_.dynatemp_range);
    apply_dynatemp(c, lo, hi, std::max(0.0f, p_.dynatemp_exponent));
    if (c.items.size() > 1) apply_smoothing(c, p_.smoothing_factor, p_.smoothing_curve);
  } else {
    apply_temperature(c, p_.temperature);
    if (p_.temperature > 0) apply_smoothing(c, p_.smoothing_factor, p_.smoothing_curve);
  }
  apply_nsigma(c, p_.nsigma);
}

void Sampler::load(const float* logits, bool grammar_first) {
  Candidates& c = cand_;
  c.items.clear();
  c.sorted = false;
  if (grammar_first) {
    matcher_->allowed_tokens(allowed_);    // one walk over the vocabulary's trie
    allowed_.resize(size_t(n_vocab_), 0);  // ids past the table have no text
    if (eos_ >= 0 && eos_ < n_vocab_) allowed_[size_t(eos_)] = matcher_->can_end();
  }
  for (int i = 0; i < n_vocab_; ++i)
    if (!banned_[size_t(i)] && (!grammar_first || allowed_[size_t(i)]))
      c.items.push_back({i, std::isnan(logits[i]) ? -INFINITY : logits[i]});
  if (!p_.logit_bias.empty()) {
    // The set holds every unbanned id in order; find each biased id by binary search.
    for (const auto& [id, bias] : p_.logit_bias) {
      auto it =
          std::lower_bound(c.items.begin(), c.items.end(), id, [](const Candidate& a, int v) { return a.id < v; });
      if (it != c.items.end() && it->id == id) it->logit += bias;
    }
  }
}

void Sampler::run_chain(const std::vector<int>& history) {
  Candidates& c = cand_;
  const auto run = [&](Stage st) {
    switch (st) {
      case Stage::kDry:
        if (dry_.on()) dry_.apply(c, history, p_.n_ctx);
        break;
      case Stage::kKeepMostLikely:
        keep_most_likely(c, kMaxCandidates);
        break;
      case Stage::kOrdered:
        for (int s : order_) apply_slot(s, c, history);
        break;
      case Stage::kXtc:
        if (xtc_draws(c, p_.xtc_threshold, p_.xtc_probability))
          apply_xtc(c, p_.xtc_threshold, p_.xtc_probability, uniform());
        break;
      case Stage::kRepPen:
        apply_slot(6, c, history);
        break;
      case Stage::kTemperature:
        apply_temperature(c, p_.temperature);
        if (p_.temperature > 0) apply_smoothing(c, p_.smoothing_factor, p_.smoothing_curve);
        break;
      case Stage::kMirostat:
        if (p_.mirostat == 1)
          apply_mirostat_v1(c, mu_, n_vocab_);
        else
          apply_mirostat_v2(c, mu_);
        break;
    }
  };
  if (p_.mirostat == 0)
    for (Stage st : kChain) run(st);
  else
    for (Stage st : kMirostatChain) run(st);
}

void Sampler::filter(const float* logits, const std::vector<int>& history) {
  Candidates& c = cand_;
  grammar_stuck_ = false;
  load(logits, false);
  run_chain(history);
  // The grammar checks the few tokens the samplers kept (cheap); only when it refuses them all
  // does it filter the whole vocabulary first and the samplers run again on what it allows.
  if (matcher_ && !grammar_keep()) {
    load(logits, true);
    if (c.items.empty()) {
      grammar_stuck_ = true;
      c.items.push_back({eos_, 0.0f});
      return;
    }
    run_chain(history);
  }
  bool any_finite = false;
  for (const auto& it : c.items) any_finite |= std::isfinite(it.logit);
  if (!any_finite) {
    bool broken = true;  // the model's row: any NaN or +inf, or nothing above -inf
    for (int i = 0; i < n_vocab_ && broken; ++i) broken = !(logits[i] > -INFINITY && logits[i] < INFINITY);
    for (int i = 0; i < n_vocab_ && !broken; ++i) broken = std::isnan(logits[i]) || logits[i] == INFINITY;
    if (broken) throw SamplingError("sampler: the model produced no usable logits (NaN or infinite)", true);
    throw SamplingError("sampler: the request's bans leave no token that can be sampled", false);
  }
}

void Sampler::apply_slot(int s, Candidates& c, const std::vector<int>& history) {
  switch (s) {
    case 0:
      apply_top_k(c, p_.top_k);
      break;
    case 1:
      apply_top_a(c, p_.top_a);
      break;
    case 2:
      apply_top_p(c, p_.top_p);
      apply_min_p(c, p_.min_p);
      break;
    case 3:
      apply_tail_free(c, p_.tfs);
      break;
    case 4:
      apply_typical(c, p_.typical);
      break;
    case 5:
      temperature_slot(c);
      break;
    case 6:
      apply_rep_pen(c, history, p_.rep_pen, p_.rep_pen_range, p_.rep_pen_slope, p_.presence_penalty, p_.n_ctx, seen_);
      break;
    default:
      break;
  }
}

size_t Sampler::draw() {
  Candidates& c = cand_;
  if (c.items.size() == 1) return 0;
  c.softmax();
  double r = uniform();
  for (size_t i = 0; i < c.items.size(); ++i) {
    r -= c.p[i];
    if (r < 0) return i;
  }
  // Rounding left r just above 0: the last token with any probability.
  for (size_t i = c.items.size(); i-- > 0;)
    if (c.p[i] > 0) return i;
  return c.items.size() - 1;
}

size_t Sampler::draw_verify(int draft, DraftDist q) {
  Candidates& c = cand_;
  if (c.items.size() == 1) return 0;  // p is one-hot: the draft is kept iff it is that token
  c.softmax();
  const size_t n = c.items.size();
  size_t d = n;  // the draft's index; n: p(draft) = 0
  for (size_t i = 0; i < n; ++i)
    if (c.items[i].id == draft) d = i;
  bool dense = !q.empty();
  if (dense) {
    qdense_.resize(size_t(n_vocab_), 0.0f);  // once; zero again after every call
    for (const auto& [id, pr] : q)
      if (id >= 0 && id < n_vocab_) qdense_[size_t(id)] = pr;
  }
  double qd = 1.0;
  if (dense) {
    qd = draft >= 0 && draft < n_vocab_ ? double(qdense_[size_t(draft)]) : 0.0;
    if (!(qd > 0)) dense = false, qd = 1.0;  // a draft outside its own q: taken as one-hot
  }
  const double pd = d < n ? c.p[d] : 0.0;
  size_t pick = d;
  // Kept with probability min(1, p/q); otherwise drawn from the residual max(p - q, 0).
  if (!(pd >= qd || (pd > 0 && uniform() * qd < pd))) {
    auto w = [&](size_t i) {
      return i == d ? 0.0 : std::max(0.0, c.p[i] - (dense ? double(qdense_[size_t(c.items[i].id)]) : 0.0));
    };
    double total = 0;
    for (size_t i = 0; i < n; ++i) total += w(i);
    // Rounding can leave no residual mass when p and q nearly agree: then p without the draft.
    if (!(total > 0)) dense = false, total = 1.0 - pd;
    double r = uniform() * total;
    pick = n;
    for (size_t i = 0; i < n && pick == n; ++i)
      if ((r -= w(i)) < 0) pick = i;
    for (size_t i = n; pick == n && i-- > 0;)  // rounding left r just above 0
      if (w(i) > 0) pick = i;
    if (pick == n) pick = d < n ? d : 0;  // p(draft) was 1 up to rounding
  }
  if (!q.empty() && !qdense_.empty())
    for (const auto& [id, pr] : q)
      if (id >= 0 && id < n_vocab_) qdense_[size_t(id)] = 0.0f;
  return pick;
}

int Sampler::sample(const float* logits, const std::vector<int>& history) { return sample_draft(logits, history, -1); }

int Sampler::sample_draft(const float* logits, const std::vector<int>& history, int draft, DraftDist q) {
  filter(logits, history);
  return finish_draw(logits, draft < 0 ? draw() : draw_verify(draft, q));
}

int Sampler::sample_dist(const float* logits, const std::vector<int>& history, std::vector<std::pair<int, float>>& q) {
  filter(logits, history);
  const size_t i = draw();
  q.clear();
  if (cand_.items.size() == 1) {
    q.emplace_back(cand_.items[0].id, 1.0f);
  } else {
    for (size_t k = 0; k < cand_.items.size(); ++k)
      if (float(cand_.p[k]) > 0) q.emplace_back(cand_.items[k].id, float(cand_.p[k]));
  }
  return finish_draw(logits, i);
}

int Sampler::finish_draw(const float* logits, size_t i) {
  if (p_.mirostat != 0) {
    // mu moves by eta times how far the drawn token's surprise (bits, in the cut set) was from tau.
    const double p = cand_.items.size() == 1 ? 1.0 : cand_.p[i];
    mu_ -= double(p_.mirostat_eta) * (-std::log2(p) - double(p_.mirostat_tau));
  }
  const int tok = cand_.items[i].id;
  if (p_.logprobs != SamplerParams::Logprobs::kOff) {
    if (cand_.items.size() == 1) cand_.p.assign(1, 1.0);  // draw() skips the softmax of one token
    record_logprobs(logits, tok, i);
  }
  if (matcher_ && tok != eos_) matcher_->accept(tok);
  return tok;
}

void Sampler::record_logprobs(const float* logits, int token, size_t chosen) {
  // Keeps the top_logprobs best {id, value} pairs in last_.top, best first (insertion; n <= 20).
  const size_t n = size_t(p_.top_logprobs);
  auto offer = [&](int id, float v) {
    auto& top = last_.top;
    if (n == 0 || (top.size() == n && !(v > top.back().second))) return;
    if (top.size() < n) top.push_back({id, v});
    size_t i = top.size() - 1;
    while (i > 0 && top[i - 1].second < v) top[i] = top[i - 1], --i;
    top[i] = {id, v};
  };
  last_.token = token;
  last_.top.clear();
  if (p_.logprobs == SamplerParams::Logprobs::kModel) {
    // log p = logit - logsumexp(logits), over the whole vocabulary.
    float mx = -INFINITY;
    for (int i = 0; i < n_vocab_; ++i)
      if (logits[i] > mx) mx = logits[i];
    double sum = 0;
    for (int i = 0; i < n_vocab_; ++i)
      if (std::isfinite(logits[i])) sum += std::exp(double(logits[i]) - mx);
    const float lse = float(mx + std::log(sum));
    last_.logprob = logits[token] - lse;
    for (int i = 0; i < n_vocab_; ++i)
      if (std::isfinite(logits[i])) offer(i, logits[i] - lse);
  } else {
    // KoboldCpp reports probabilities below 1e-4 as 1e-4.
    auto lp = [](double p) { return float(std::log(std::max(p, 1e-4))); };
    last_.logprob = lp(cand_.p[chosen]);
    for (size_t i = 0; i < cand_.items.size(); ++i) offer(cand_.items[i].id, lp(cand_.p[i]));
  }
}

std::vector<std::pair<int, double>> Sampler::distribution(const float* logits, const std::vector<int>& history) {
  filter(logits, history);
  cand_.softmax();
  std::vector<std::pair<int, double>> out;
  for (size_t i = 0; i < cand_.items.size(); ++i) out.emplace_back(cand_.items[i].id, cand_.p[i]);
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.second > b.second; });
  return out;
}

}  // namespace metharme
