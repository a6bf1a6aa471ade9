// Speculative decoding: prompt lookup, the draft-model drafter, KvContext::extend/truncate, the
// rejection rule of Sampler::sample_draft (statistically, against the plain sampler), and greedy
// output token for token equal to plain decoding in generate, chat and the serving engine.
#include "chat/speculative.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <random>

#include "chat/generate.h"
#include "chat/session.h"
#include "serve/engine.h"
#include "support/model_util.h"
#include "support/stats_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme {
namespace {

// One draw from (id, probability) pairs by inverse CDF (the last id when rounding leaves r >= 0).
template <class Prob>
int draw(const std::vector<std::pair<int, Prob>>& dist, std::mt19937_64& rng) {
  double r = double(rng() >> 11) * 0x1.0p-53;
  for (auto [id, p] : dist)
    if ((r -= p) < 0) return id;
  return dist.back().first;
}

std::vector<int> ids_of(const nlohmann::json& j) {
  return j.is_string() ? nlohmann::json::parse(j.get<std::string>()).get<std::vector<int>>()
                       : j.get<std::vector<int>>();
}

TEST(SpecLookup, CopiesWhatFollowedTheLatestMatchOfTheLongestSuffix) {
  int out[8] = {};
  // Suffix [7 8] occurred twice; the latest occurrence is followed by 5 6.
  std::vector<int> h{1, 7, 8, 9, 9, 3, 7, 8, 5, 6, 4, 7, 8};
  ASSERT_EQ(ngram_lookup(h, 2, 4, 3, out), 3);
  EXPECT_EQ(std::vector<int>(out, out + 3), (std::vector<int>{5, 6, 4}));
  // Only as many as the history holds after the match.
  std::vector<int> h2{4, 5, 6, 4, 5};
  ASSERT_EQ(ngram_lookup(h2, 2, 4, 8, out), 3);
  EXPECT_EQ(std::vector<int>(out, out + 3), (std::vector<int>{6, 4, 5}));
  // The longer suffix wins over a later shorter match: [2 3] at 0 beats [3] at 4.
  std::vector<int> h3{2, 3, 10, 11, 3, 12, 2, 3};
  ASSERT_EQ(ngram_lookup(h3, 1, 2, 2, out), 2);
  EXPECT_EQ(std::vector<int>(out, out + 2), (std::vector<int>{10, 11}));
  ASSERT_EQ(ngram_lookup(h3, 1, 1, 2, out), 2);  // unigrams only: the latest 3 is at 4
  EXPECT_EQ(std::vector<int>(out, out + 2), (std::vector<int>{12, 2}));
  EXPECT_EQ(ngram_lookup(std::vector<int>{1, 2, 3, 4}, 1, 3, 4, out), 0);  // nothing repeats
  EXPECT_EQ(ngram_lookup(std::vector<int>{5}, 1, 3, 4, out), 0);
  EXPECT_EQ(ngram_lookup(std::vector<int>{}, 1, 3, 4, out), 0);
  EXPECT_EQ(ngram_lookup(h, 2, 4, 0, out), 0);
}

TEST(SpecVocab, RefusesADifferentTokenizer) {
  std::vector<std::string> a{"<unk>", "<s>", "</s>", "a"}, b = a;
  EXPECT_NO_THROW(check_draft_vocab(4, 4, a, b));
  b[3] = "b";
  EXPECT_THROW(check_draft_vocab(4, 4, a, b), Error);
  EXPECT_THROW(check_draft_vocab(4, 5, a, a), Error);
  b.push_back("c");
  EXPECT_THROW(check_draft_vocab(4, 4, a, b), Error);
}

TEST(SpecKv, ExtendGivesEveryRowAndTruncateRollsBack) {
  auto m = test::load_model(test::fixture("models/stories260k"), 1, 64);
  const int V = m.rt->n_vocab();
  std::vector<int> ids{1, 403, 407, 261, 378, 432};
  auto want = test::all_logits_incremental(*m.rt, ids);
  KvContext ctx(*m.rt, 0);
  ctx.sync(std::span<const int>(ids.data(), 2));
  const float* rows = ctx.extend(std::span<const int>(ids.data() + 2, 4));
  ASSERT_EQ(ctx.size(), 6);
  for (int j = 0; j < 4; ++j)
    EXPECT_LT(test::max_abs_diff(rows + size_t(j) * size_t(V), want.data() + size_t(2 + j) * size_t(V), size_t(V)),
              1e-4f);
  // Roll back two positions and continue differently: as if they had never been evaluated.
  ctx.truncate(4);
  const float* got = ctx.append(300);
  std::vector<int> other{1, 403, 407, 261, 300};
  auto want2 = test::all_logits_incremental(*m.rt, other);
  EXPECT_LT(test::max_abs_diff(got, want2.data() + 4 * size_t(V), size_t(V)), 1e-4f);
  EXPECT_THROW(ctx.truncate(6), Error);
}

using test::chi2_crit;
using test::chi2_two_sample;

TEST(SpecSampler, DraftVerificationDrawsFromTheSamplersDistribution) {
  // Fixed logits over 12 tokens, a sampler chain with top-k and top-p: sample_draft() with a
  // draft that is often but not always the likeliest token must match sample()'s frequencies.
  // The same statistic rejects a broken rule (on rejection, drawing from p instead of p - q).
  const int V = 12, N = 20000;
  std::vector<float> logits{2.0f, 1.5f, 1.4f, 0.3f, 0.2f, -0.5f, 1.0f, 0.9f, -2.0f, 0.1f, 0.0f, 1.2f};
  SamplerParams sp;
  sp.temperature = 1.0f;
  sp.top_k = 8;
  sp.top_p = 0.95f;
  sp.seed = 7;
  Sampler plain(sp, V), spec(sp, V);
  sp.seed = 8;
  Sampler probe(sp, V);
  std::vector<int> history{3};
  test::Counts a, b, broken;
  std::mt19937_64 rng(9);
  auto dist = probe.distribution(logits.data(), history);
  for (int i = 0; i < N; ++i) {
    a[plain.sample(logits.data(), history)]++;
    const int draft = int(rng() % 3) == 0 ? 6 : 0;  // token 6: p around 0.09; token 0: the likeliest
    b[spec.sample_draft(logits.data(), history, draft)]++;
    // Broken: accept with p(draft), else redraw from p itself (the draft can come back).
    double pd = 0;
    for (auto [id, p] : dist)
      if (id == draft) pd = p;
    double u = double(rng() >> 11) * 0x1.0p-53;
    if (u < pd) {
      broken[draft]++;
    } else {
      broken[draw(dist, rng)]++;
    }
  }
  auto [stat, df] = chi2_two_sample(a, b);
  EXPECT_LT(stat, chi2_crit(df)) << "df " << df;
  auto [bad, bdf] = chi2_two_sample(a, broken);
  EXPECT_GT(bad, chi2_crit(bdf)) << "the test cannot tell a broken rule (df " << bdf << ")";
}

TEST(SpecSampler, DraftsSampledFromQMatchTheSamplersDistribution) {
  // Drafts drawn from a q unlike p (flatter, and with mass on a token p's top-k removes) and
  // verified with that q: the output's frequencies must fit p exactly (goodness of fit at 1e-3),
  // while the wrong rule "on rejection draw from p" gives a distribution the same test rejects.
  const int V = 10, N = 40000;
  std::vector<float> logits{2.0f, 1.2f, 1.0f, 0.5f, 0.2f, -0.3f, 0.1f, -1.0f, 0.4f, 0.0f};
  SamplerParams sp;
  sp.temperature = 1.0f;
  sp.top_k = 6;
  sp.seed = 11;
  Sampler spec(sp, V), probe(sp, V);
  std::vector<int> history{4};
  test::Probs p, wrong;
  for (auto [id, pr] : probe.distribution(logits.data(), history)) p[id] = pr;
  std::vector<std::pair<int, float>> q{{0, 0.2f}, {1, 0.2f}, {2, 0.15f}, {3, 0.15f}, {7, 0.2f}, {9, 0.1f}};
  double kept = 0;
  for (auto [id, qi] : q) kept += std::min(double(qi), p.count(id) ? p[id] : 0.0);
  for (auto [id, pi] : p) wrong[id] = (1 - kept) * pi;
  for (auto [id, qi] : q) wrong[id] += std::min(double(qi), p.count(id) ? p[id] : 0.0);
  std::mt19937_64 rng(12);
  test::Counts got;
  int rejected = 0;
  for (int i = 0; i < N; ++i) {
    const int draft = draw(q, rng);
    const int tok = spec.sample_draft(logits.data(), history, draft, q);
    rejected += tok != draft;
    got[tok]++;
  }
  EXPECT_GT(rejected, N / 10);
  auto [stat, df] = test::chi2_fit(got, p);
  EXPECT_EQ(df, 5);
  EXPECT_LT(stat, chi2_crit(df));
  auto [bad, bdf] = test::chi2_fit(got, wrong);
  EXPECT_GT(bad, chi2_crit(bdf)) << "the test cannot tell the wrong rule (df " << bdf << ")";
  // Token 7 is outside p's support: drafted often, never output.
  EXPECT_EQ(got.count(7), 0u);
}

TEST(SpecDrafter, DraftModelSamplesWithTheRequestsSamplers) {
  // After begin() with temperature 3 and top-k 3, the draft model's drafts vary with its random
  // stream and each comes with the q it was drawn from: top-k's three tokens, summing to 1, equal
  // to the samplers' distribution over the draft model's logits. Greedy settings give one-hot q.
  auto m = test::load_model(test::fixture("models/stories260k"), 1, 64);
  SpecConfig cfg{2, false, 2, 4, m.rt.get()};
  Drafter d(cfg, 0);
  SamplerParams sp;
  sp.temperature = 3.0f;
  sp.top_k = 3;
  sp.seed = 5;
  d.begin(sp, 2);
  std::vector<int> history{1, 403, 407, 261};
  auto logits = test::all_logits(*m.rt, history);
  Sampler probe(sp, m.rt->n_vocab());
  auto want = probe.distribution(logits.data() + 3 * size_t(m.rt->n_vocab()), history);
  ASSERT_EQ(want.size(), 3u);
  ASSERT_LT(want[0].second, 0.9) << "too peaked to see drafts vary";
  std::map<int, int> firsts;
  int out[2];
  for (int i = 0; i < 60; ++i) {
    ASSERT_EQ(d.draft(history, 2, out), 2);
    firsts[out[0]]++;
    auto q0 = d.q(0);
    ASSERT_EQ(q0.size(), 3u);
    double sum = 0;
    for (const auto& e : q0) {
      const auto id = e.first;
      const auto pr = e.second;
      sum += pr;
      // (clang 14 cannot capture a structured binding in a lambda)
      auto it = std::find_if(want.begin(), want.end(), [&](const auto& w) { return w.first == id; });
      ASSERT_NE(it, want.end()) << id;
      EXPECT_NEAR(pr, it->second, 1e-5);
    }
    EXPECT_NEAR(sum, 1.0, 1e-5);
    EXPECT_TRUE(std::any_of(q0.begin(), q0.end(), [&](const auto& e) { return e.first == out[0]; }));
    EXPECT_FALSE(d.q(1).empty());
  }
  EXPECT_GE(firsts.size(), 2u) << "drafts never vary: not sampled";
  sp.temperature = 0;
  d.begin(sp, 2);
  ASSERT_EQ(d.draft(history, 1, out), 1);
  ASSERT_EQ(d.q(0).size(), 1u);
  EXPECT_EQ(d.q(0)[0].first, want[0].first);
  EXPECT_EQ(out[0], want[0].first);
}

TEST(SpecSampler, GreedyKeepsTheDraftOnlyWhenItIsTheArgmax) {
  std::vector<float> logits{0.1f, 3.0f, 2.9f, -1.0f};
  SamplerParams sp;
  sp.temperature = 0;
  Sampler s(sp, 4);
  std::vector<int> h{0};
  EXPECT_EQ(s.sample_draft(logits.data(), h, 1), 1);
  EXPECT_EQ(s.sample_draft(logits.data(), h, 2), 1);
  EXPECT_EQ(s.sample_draft(logits.data(), h, -1), 1);
}

struct Models {
  test::Loaded target, draft;
  Tokenizer tok;
  explicit Models(const std::string& dir, const std::string& draft_dir, int n_seq = 1)
      : target(test::load_model(test::fixture(dir), 1, 256, n_seq)),
        draft(test::load_model(test::fixture(draft_dir), 1, 256, n_seq)),
        tok(Tokenizer::from_folder(test::fixture(dir))) {}
};

GenerateResult run(LlamaRuntime& rt, const Tokenizer& tok, const std::vector<int>& prompt, GenerateOptions go,
                   Drafter* d, int draft_max = 5) {
  go.drafter = d;
  go.draft_max = draft_max;
  return generate(rt, tok, prompt, go, nullptr);
}

TEST(SpecGenerate, GreedyEqualsRunCTokenForToken) {
  Models m("models/stories260k", "models/stories260k");
  auto g = test::read_json(test::fixture("models/stories260k/golden_generate.json"));
  SpecConfig lookup{5, true, 1, 3, nullptr}, model{5, false, 2, 4, m.draft.rt.get()},
      both{3, true, 2, 4, m.draft.rt.get()};
  SpecStats lookup_stats, model_stats;
  for (const auto& p : g["prompts"]) {
    auto prompt = ids_of(p["prompt_ids"]), want = ids_of(p["generated_ids"]);
    GenerateOptions go;
    go.max_tokens = int(want.size());
    go.stop_at_eos = false;
    go.sampler.temperature = 0;
    for (SpecConfig* cfg : {&lookup, &model, &both}) {
      Drafter d(*cfg, 0);
      auto res = run(*m.target.rt, m.tok, prompt, go, &d, cfg->draft_max);
      EXPECT_EQ(res.tokens, want) << "prompt " << p["index"] << " drafter " << (cfg - &lookup);
      if (cfg == &lookup) lookup_stats.add(res.spec);
      if (cfg == &model) model_stats.add(res.spec);
    }
  }
  EXPECT_GT(lookup_stats.accepted, 0);
  // The draft is the target itself: every draft is kept.
  EXPECT_GT(model_stats.drafted, 100);
  EXPECT_EQ(model_stats.accepted, model_stats.drafted);
}

TEST(SpecGenerate, GreedyEqualsPlainWithADifferentDraftModel) {
  // llama-rand-h256 checked by its GQA sibling (same 32000-token tokenizer, different weights):
  // drafts are mostly wrong, and the output must still be the plain one.
  Models m("models/llama-rand-h256", "models/llama-rand-h256-gqa");
  for (const std::string text : {"Hello world, hello world, hello", "The cat sat on the mat."}) {
    auto prompt = m.tok.encode(text, true);
    GenerateOptions go;
    go.max_tokens = 40;
    go.stop_at_eos = false;
    go.sampler.temperature = 0;
    auto plain = run(*m.target.rt, m.tok, prompt, go, nullptr);
    for (bool lookup : {false, true}) {
      SpecConfig cfg{4, lookup, 1, 3, m.draft.rt.get()};
      Drafter d(cfg, 0);
      auto res = run(*m.target.rt, m.tok, prompt, go, &d, 4);
      EXPECT_EQ(res.tokens, plain.tokens) << text;
      EXPECT_EQ(res.text, plain.text);
      EXPECT_GT(res.spec.steps, 0);
    }
  }
}

TEST(SpecGenerate, SeededSamplingMatchesThePlainSamplerStatistically) {
  // Temperature 1 with rep-pen and DRY (they read the history) on stories260k; the draft is the
  // target with its logits scaled by 0.3 (final norm), sampled with the same samplers: a flatter
  // q, so drafts are rejected often. The 2nd and 4th tokens' frequencies over 1500 seeds each
  // must pass a chi-square homogeneity test at significance 1e-3 (per position) against plain
  // decoding.
  Models m("models/stories260k", "models/stories260k");
  for (float& w : m.draft.weights->final_norm) w *= 0.3f;
  auto prompt = m.tok.encode("Once upon a time, there was a", true);
  GenerateOptions go;
  go.max_tokens = 4;
  go.stop_at_eos = false;
  go.sampler.temperature = 1.0f;
  go.sampler.rep_pen = 1.3f;
  go.sampler.dry_multiplier = 0.8f;
  const int N = 1500;
  SpecConfig cfg{3, false, 2, 4, m.draft.rt.get()};
  Drafter d(cfg, 0);
  KvContext plain_ctx(*m.target.rt, 0);
  test::Counts plain[2], spec[2];
  int64_t drafted = 0, accepted = 0;
  for (int i = 0; i < N; ++i) {
    go.sampler.seed = uint64_t(1000 + i);
    go.drafter = nullptr;
    auto a = generate(plain_ctx, m.tok, prompt, go, nullptr);
    go.sampler.seed = uint64_t(900000 + i);
    go.drafter = &d;
    go.draft_max = 3;
    auto b = generate(plain_ctx, m.tok, prompt, go, nullptr);
    ASSERT_EQ(a.tokens.size(), 4u);
    ASSERT_EQ(b.tokens.size(), 4u);
    plain[0][a.tokens[1]]++, plain[1][a.tokens[3]]++;
    spec[0][b.tokens[1]]++, spec[1][b.tokens[3]]++;
    drafted += b.spec.drafted, accepted += b.spec.accepted;
  }
  EXPECT_GT(accepted, drafted / 10);  // both outcomes are exercised
  EXPECT_LT(accepted, drafted * 9 / 10);
  for (int k = 0; k < 2; ++k) {
    auto [stat, df] = chi2_two_sample(plain[k], spec[k]);
    EXPECT_GE(df, 5);
    EXPECT_LT(stat, chi2_crit(df)) << "position " << (k ? 3 : 1) << ", df " << df;
  }
}

TEST(SpecChat, GreedyRepliesEqualPlainAcrossTurns) {
  Models m("models/stories260k", "models/stories260k");
  GenerateOptions go;
  go.max_tokens = 40;
  go.sampler.temperature = 0;
  SpecConfig cfg{4, true, 1, 3, m.draft.rt.get()};
  Drafter d(cfg, 0);
  ChatSession plain(*m.target.rt, m.tok, 0);
  auto target2 = test::load_model(test::fixture("models/stories260k"), 1, 256);
  ChatSession spec(*target2.rt, m.tok, 0);
  GenerateOptions gs = go;
  gs.drafter = &d;
  gs.draft_max = 4;
  int64_t steps = 0;
  for (const char* msg : {"Tell me a story about a dog.", "And then what happened?", "The end?"}) {
    auto a = plain.say(msg, go, nullptr);
    auto b = spec.say(msg, gs, nullptr);
    EXPECT_EQ(b.tokens, a.tokens) << msg;
    EXPECT_EQ(b.text, a.text);
    steps += b.spec.steps;
    // The cache holds the prompt and the fed output, nothing of the rejected drafts.
    const auto& kv = spec.kv().tokens();
    ASSERT_GE(kv.size(), b.tokens.size());
  }
  EXPECT_GT(steps, 0);
}

TEST(SpecServe, GreedyEqualsRunCAcrossSlotsWithDrafts) {
  const std::string dir = test::fixture("models/stories260k");
  Models m("models/stories260k", "models/stories260k", 3);
  for (bool with_model : {false, true}) {
    serve::EngineOptions eo;
    eo.max_queue = 16;
    eo.prefill_chunk = 7;
    eo.spec = SpecConfig{4, !with_model, 1, 3, with_model ? m.draft.rt.get() : nullptr};
    serve::Engine engine(*m.target.rt, m.tok, eo);
    auto g = test::read_json(dir + "/golden_generate.json");
    std::vector<serve::GenSpec> specs;
    std::vector<std::vector<int>> want;
    for (const auto& p : g["prompts"]) {
      want.push_back(ids_of(p["generated_ids"]));
      serve::GenSpec s;
      s.prompt = ids_of(p["prompt_ids"]);
      s.max_new = int(want.back().size());
      s.sampler.temperature = 0;
      s.sampler.logprobs = SamplerParams::Logprobs::kSampled;
      s.stop_at_eos = false;
      s.quiet = true;
      specs.push_back(s);
    }
    auto jobs = engine.submit(std::move(specs));
    ASSERT_EQ(jobs.size(), want.size());
    for (size_t i = 0; i < jobs.size(); ++i) {
      auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
      while (!jobs[i]->done() && std::chrono::steady_clock::now() < deadline)
        jobs[i]->wait(jobs[i]->text().size(), std::chrono::milliseconds(10));
      ASSERT_TRUE(jobs[i]->done());
      EXPECT_EQ(jobs[i]->tokens(), want[i]) << "prompt " << i << (with_model ? " (draft model)" : " (lookup)");
      auto lps = jobs[i]->logprobs_from(0);
      ASSERT_EQ(lps.size(), want[i].size());
      for (size_t t = 0; t < lps.size(); ++t) EXPECT_EQ(lps[t].token, want[i][t]);
    }
    auto st = engine.stats();
    EXPECT_GT(st.spec.accepted, 0);
    if (with_model) {
      EXPECT_EQ(st.spec.accepted, st.spec.drafted);
    }
  }
}

}  // namespace
}  // namespace metharme
