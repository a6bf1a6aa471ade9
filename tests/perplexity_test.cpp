// Perplexity and KL-divergence against the fixtures' goldens (PyTorch reference, GPTQ-for-LLaMa's
// windowing), the llama.cpp protocol's scoring rule, and the `metharme perplexity` command.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

#include "eval/perplexity.h"
#include "formats/npy.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme::eval {
namespace {

// Fixtures README: an fp32 forward matches the reference logits within ~1e-4 absolute, so a mean
// NLL (a log-softmax entry) stays within 1e-4 and a perplexity within 1e-4 relative.
constexpr double kNllTol = 1e-4;

class RandomModelPpl : public ::testing::TestWithParam<std::string> {};

TEST_P(RandomModelPpl, WikitextWindowsMatchGolden) {
  const std::string dir = test::fixture("models/" + GetParam());
  auto g = test::read_json(dir + "/golden_logits.json")["wikitext2_test_ppl"];
  auto m = test::load_model(dir, 2, 128);
  EvalSet s = eval_set_from_ids(test::wikitext_window_ids(), Protocol::kGptq, 128, 1);
  ASSERT_EQ(s.n_windows(), 4);
  LlamaRuntime* rts[] = {m.rt.get()};
  EvalResult r = evaluate(s, rts, nullptr);
  const ModelScores& sc = r.models[0];
  ASSERT_EQ(sc.window_nll.size(), 4u);
  double worst = 0;
  for (size_t w = 0; w < 4; ++w) {
    EXPECT_NEAR(sc.window_nll[w], g["window_mean_nll"][w].get<double>(), kNllTol) << w;
    worst = std::max(worst, std::fabs(sc.window_nll[w] - g["window_mean_nll"][w].get<double>()));
  }
  std::printf("%s: max |window NLL - golden| = %.2e\n", GetParam().c_str(), worst);
  EXPECT_NEAR(sc.ppl() / g["ppl"].get<double>(), 1.0, kNllTol);
  EXPECT_EQ(sc.scored, 4 * 127);
  EXPECT_EQ(sc.tokens, 512);

  // Feeding the windows in small chunks of positions gives the same losses.
  EvalOptions small;
  small.chunk = 37;
  EvalResult r2 = evaluate(s, rts, nullptr, small);
  for (size_t w = 0; w < 4; ++w) EXPECT_NEAR(r2.models[0].window_nll[w], sc.window_nll[w], 1e-6) << w;
}

TEST_P(RandomModelPpl, PromptPerplexitiesMatchGolden) {
  const std::string dir = test::fixture("models/" + GetParam());
  auto g = test::read_json(dir + "/golden_logits.json");
  auto m = test::load_model(dir, 2, 128);
  LlamaRuntime* rts[] = {m.rt.get()};
  for (const auto& p : g["prompts"]) {
    auto ids = p["input_ids"].get<std::vector<int32_t>>();
    const int T = int(ids.size());
    EvalSet s = eval_set_from_ids(ids, Protocol::kGptq, T, 1);  // the prompt is one window
    EvalResult r = evaluate(s, rts, nullptr);
    EXPECT_NEAR(r.models[0].sum_nll, p["sum_nll"].get<double>(), kNllTol * (T - 1));
    EXPECT_NEAR(r.models[0].ppl() / p["ppl"].get<double>(), 1.0, kNllTol);
  }
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RandomModelPpl, ::testing::Values("llama-rand-h256", "llama-rand-h256-gqa"));

// llama.cpp: BOS replaces each chunk's first token; rows ctx/2 .. ctx-2 are scored.
TEST(LlamaCppProtocol, ScoresTheSecondHalfOfEachChunkAfterBos) {
  auto m = test::load_model(test::fixture("models/llama-rand-h256-gqa"), 2, 64);
  EvalSet s = eval_set_from_ids(test::wikitext_window_ids(), Protocol::kLlamaCpp, 64, 1);
  ASSERT_EQ(s.n_windows(), 8);
  ASSERT_EQ(s.scored_per_window(), 31);
  LlamaRuntime* rts[] = {m.rt.get()};
  EvalOptions eo;
  eo.chunk = 20;  // chunks straddle the first scored row
  EvalResult r = evaluate(s, rts, nullptr, eo);
  const int V = m.rt->n_vocab();
  double total = 0;
  for (int w = 0; w < 8; ++w) {
    std::vector<int> ids(s.tokens.begin() + w * 64, s.tokens.begin() + (w + 1) * 64);
    ids[0] = 1;
    auto logits = test::all_logits(*m.rt, ids);
    double sum = 0;
    for (int t = 32; t < 63; ++t) {
      const float* row = &logits[size_t(t) * size_t(V)];
      double mx = *std::max_element(row, row + V), z = 0;
      for (int v = 0; v < V; ++v) z += std::exp(double(row[v]) - mx);
      sum += mx + std::log(z) - double(row[ids[size_t(t) + 1]]);
    }
    EXPECT_NEAR(r.models[0].window_nll[size_t(w)], sum / 31, 1e-5) << w;
    total += sum;
  }
  EXPECT_EQ(r.models[0].scored, 8 * 31);
  EXPECT_NEAR(std::log(r.models[0].ppl()), total / (8 * 31), 1e-5);
}

TEST(Kld, ModelAgainstItselfIsZero) {
  const std::string dir = test::fixture("models/llama-rand-h256-gqa");
  auto a = test::load_model(dir, 2, 128), b = test::load_model(dir, 2, 128);
  EvalSet s = eval_set_from_ids(test::wikitext_window_ids(), Protocol::kGptq, 128, 1, 2);
  LlamaRuntime* rts[] = {a.rt.get()};
  EvalResult r = evaluate(s, rts, b.rt.get());
  KldSummary k = summarize_kld(r.models[0].kld, r.models[0].top1_same);
  EXPECT_EQ(k.count, 2 * 127);
  EXPECT_LE(std::fabs(k.mean), 1e-7);
  EXPECT_LE(k.max, 1e-7);
  EXPECT_EQ(k.top1_agreement, 1.0);
  EXPECT_NEAR(r.models[0].ppl(), r.base.ppl(), 1e-9 * r.base.ppl());
}

// KL(h256 || h256-gqa) at the last position of each golden prompt, against the value computed
// from both models' golden logits rows.
TEST(Kld, MatchesValueFromGoldenLogits) {
  const std::string base_dir = test::fixture("models/llama-rand-h256"), dir = test::fixture("models/llama-rand-h256-gqa");
  auto base = test::load_model(base_dir, 2, 128), m = test::load_model(dir, 2, 128);
  auto gb = test::read_json(base_dir + "/golden_logits.json"), gm = test::read_json(dir + "/golden_logits.json");
  for (size_t k = 0; k < 3; ++k) {
    auto ids = gb["prompts"][k]["input_ids"].get<std::vector<int32_t>>();
    ASSERT_EQ(ids, gm["prompts"][k]["input_ids"].get<std::vector<int32_t>>());
    const int T = int(ids.size());
    ids.push_back(13);  // one more token so that row T-1 (after the whole prompt) is scored
    auto p = read_npy(base_dir + "/" + gb["prompts"][k]["last_logits_file"].get<std::string>()).to_f32();
    auto q = read_npy(dir + "/" + gm["prompts"][k]["last_logits_file"].get<std::string>()).to_f32();
    const double want = test::reference_kl(p, q);
    EvalSet s = eval_set_from_ids(ids, Protocol::kGptq, T + 1, 1);
    LlamaRuntime* rts[] = {m.rt.get()};
    EvalResult r = evaluate(s, rts, base.rt.get());
    ASSERT_EQ(r.models[0].kld.size(), size_t(T));
    // Logits within 1e-4 move log-probabilities by at most 2e-4 each, so KL by at most ~4e-4.
    EXPECT_NEAR(r.models[0].kld[size_t(T - 1)], want, 4e-4) << "prompt " << k;
    EXPECT_GT(want, 0.05);  // the models really differ
    for (float v : r.models[0].kld) EXPECT_GE(v, -1e-6f);
  }
}

TEST(Kld, SummaryStatistics) {
  std::vector<float> v;
  for (int i = 100; i >= 1; --i) v.push_back(float(i));
  KldSummary s = summarize_kld(v, 25);
  EXPECT_EQ(s.count, 100);
  EXPECT_DOUBLE_EQ(s.mean, 50.5);
  EXPECT_DOUBLE_EQ(s.median, 50.5);
  EXPECT_NEAR(s.p99, 99.01, 1e-9);  // numpy.percentile(range(1, 101), 99)
  EXPECT_DOUBLE_EQ(s.max, 100);
  EXPECT_DOUBLE_EQ(s.top1_agreement, 0.25);
}

}  // namespace
}  // namespace metharme::eval
