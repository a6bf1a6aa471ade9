// The forward pass against reference outputs: run.c for stories260k, a PyTorch reference for the
// random fp16 LLaMA models (README of ../shared/fixtures gives the tolerances).
#include <gtest/gtest.h>

#include <cmath>

#include "chat/generate.h"
#include "formats/npy.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme {
namespace {

constexpr float kLogitTol = 1e-4f;  // fixtures README: an fp32 forward stays within ~1e-4

std::vector<int> ids_of(const nlohmann::json& j) {
  // stories260k goldens store lists as strings.
  return j.is_string() ? nlohmann::json::parse(j.get<std::string>()).get<std::vector<int>>() : j.get<std::vector<int>>();
}

TEST(Stories260k, GreedyContinuationsMatchRunC) {
  const std::string dir = test::fixture("models/stories260k");
  auto m = test::load_model(dir);
  Tokenizer tok = Tokenizer::from_folder(dir);
  auto g = test::read_json(dir + "/golden_generate.json");
  ASSERT_EQ(g["prompts"].size(), 10u);
  for (const auto& p : g["prompts"]) {
    auto prompt_ids = ids_of(p["prompt_ids"]);
    auto want = ids_of(p["generated_ids"]);
    EXPECT_EQ(tok.encode(p["prompt"].get<std::string>(), true), prompt_ids) << p["prompt"];
    GenerateOptions go;
    go.max_tokens = int(want.size());
    go.stop_at_eos = false;
    go.sampler.temperature = 0;
    auto res = generate(*m.rt, tok, prompt_ids, go, nullptr);
    EXPECT_EQ(res.tokens, want) << "prompt " << p["prompt"];
    std::vector<int> all(prompt_ids.begin() + 1, prompt_ids.end());
    all.insert(all.end(), want.begin(), want.end());
    EXPECT_EQ(tok.decode(all), p["generated_text_runc_stdout"].get<std::string>());
  }
}

TEST(Stories260k, LogitsMatchRunCOnDecodeAndPrefillPaths) {
  const std::string dir = test::fixture("models/stories260k");
  auto m = test::load_model(dir);
  auto g = test::read_json(dir + "/golden_generate.json");
  int checked = 0;
  for (const auto& p : g["prompts"]) {
    if (!p.contains("logits_file")) continue;
    auto ids = ids_of(p["prompt_ids"]);
    auto gen = ids_of(p["generated_ids"]);
    ids.insert(ids.end(), gen.begin(), gen.end());
    ids.resize(128);
    NpyArray want = read_npy(dir + "/" + p["logits_file"].get<std::string>());
    ASSERT_EQ(want.shape, (std::vector<int64_t>{128, 512}));
    auto ref = want.to_f32();
    auto inc = test::all_logits_incremental(*m.rt, ids);
    auto pre = test::all_logits(*m.rt, ids);
    for (int t = 0; t < 128; ++t) {
      ASSERT_LE(test::max_abs_diff(&inc[size_t(t) * 512], &ref[size_t(t) * 512], 512), kLogitTol) << "decode row " << t;
      ASSERT_LE(test::max_abs_diff(&pre[size_t(t) * 512], &ref[size_t(t) * 512], 512), kLogitTol) << "prefill row " << t;
    }
    ++checked;
  }
  EXPECT_EQ(checked, 3);
}

class RandomLlama : public ::testing::TestWithParam<std::string> {};

TEST_P(RandomLlama, GoldenLogitsLogprobsAndGreedy) {
  const std::string dir = test::fixture("models/" + GetParam());
  auto m = test::load_model(dir);
  const int V = m.rt->n_vocab();
  auto g = test::read_json(dir + "/golden_logits.json");
  ASSERT_EQ(g["prompts"].size(), 3u);
  for (const auto& p : g["prompts"]) {
    auto ids = p["input_ids"].get<std::vector<int>>();
    auto logits = test::all_logits(*m.rt, ids);
    const auto& topk_ids = p["topk_ids"];
    const auto& topk_logits = p["topk_logits"];
    ASSERT_EQ(topk_ids.size(), ids.size());
    for (size_t t = 0; t < ids.size(); ++t) {
      for (size_t r = 0; r < topk_ids[t].size(); ++r) {
        int id = topk_ids[t][r];
        float want = topk_logits[t][r].get<float>();
        ASSERT_NEAR(logits[t * size_t(V) + size_t(id)], want, kLogitTol) << "position " << t << " rank " << r;
      }
    }
    // Log-probabilities of the actual next tokens and the prompt's perplexity.
    double sum_nll = 0;
    for (size_t t = 0; t + 1 < ids.size(); ++t) {
      const float* row = &logits[t * size_t(V)];
      double lse = 0, mx = row[0];
      for (int i = 0; i < V; ++i) mx = std::max(mx, double(row[i]));
      for (int i = 0; i < V; ++i) lse += std::exp(double(row[i]) - mx);
      double lp = double(row[ids[t + 1]]) - mx - std::log(lse);
      EXPECT_NEAR(lp, p["next_token_logprob"][t].get<double>(), 2e-4);
      sum_nll -= lp;
    }
    EXPECT_NEAR(sum_nll, p["sum_nll"].get<double>(), 1e-2);
    NpyArray last = read_npy(dir + "/" + p["last_logits_file"].get<std::string>());
    auto ref = last.to_f32();
    ASSERT_EQ(ref.size(), size_t(V));
    EXPECT_LE(test::max_abs_diff(&logits[(ids.size() - 1) * size_t(V)], ref.data(), size_t(V)), kLogitTol);
    if (p.contains("greedy_ids")) {
      // Greedy through the decode path; stop comparing ids after a step whose margin is within
      // numerical noise (the GQA model has a 0.0029 step), as the README advises.
      auto want = p["greedy_ids"].get<std::vector<int>>();
      auto margins = p["greedy_top1_minus_top2"].get<std::vector<double>>();
      std::vector<int> seq(ids);
      const float* l = m.rt->eval(ids, 0);
      for (size_t s = 0; s < want.size(); ++s) {
        int next = int(std::max_element(l, l + V) - l);
        if (margins[s] < 1e-2) break;
        ASSERT_EQ(next, want[s]) << "greedy step " << s;
        seq.push_back(next);
        l = m.rt->eval(std::span<const int>(&next, 1), int(seq.size()) - 1);
      }
    }
  }
}

TEST_P(RandomLlama, WikitextWindowsPerplexity) {
  const std::string dir = test::fixture("models/" + GetParam());
  auto m = test::load_model(dir);
  const int V = m.rt->n_vocab();
  auto g = test::read_json(dir + "/golden_logits.json")["wikitext2_test_ppl"];
  auto w = test::read_json(test::fixture("models/wikitext2_test_windows.json"));
  auto windows = w["input_ids"].get<std::vector<std::vector<int>>>();
  ASSERT_EQ(windows.size(), 4u);
  double total = 0;
  for (size_t k = 0; k < windows.size(); ++k) {
    auto logits = test::all_logits(*m.rt, windows[k]);
    double nll = 0;
    for (size_t t = 0; t + 1 < windows[k].size(); ++t) {
      const float* row = &logits[t * size_t(V)];
      double mx = *std::max_element(row, row + V), lse = 0;
      for (int i = 0; i < V; ++i) lse += std::exp(double(row[i]) - mx);
      nll += mx + std::log(lse) - row[windows[k][t + 1]];
    }
    nll /= double(windows[k].size() - 1);
    EXPECT_NEAR(nll, g["window_mean_nll"][k].get<double>(), 1e-4) << "window " << k;
    total += nll;
  }
  double ppl = std::exp(total / 4);
  EXPECT_NEAR(ppl / g["ppl"].get<double>(), 1.0, 1e-4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, RandomLlama, ::testing::Values("llama-rand-h256", "llama-rand-h256-gqa"));

TEST(Runtime, ThreadCountAndBatchSplitDoNotChangeLogits) {
  const std::string dir = test::fixture("models/llama-rand-h256-gqa");
  auto g = test::read_json(dir + "/golden_logits.json");
  auto ids = g["prompts"][1]["input_ids"].get<std::vector<int>>();
  auto a = test::load_model(dir, 1);
  auto b = test::load_model(dir, 2, 512, 1, 7);  // batches of 7 tokens
  auto la = test::all_logits(*a.rt, ids);
  auto lb = test::all_logits(*b.rt, ids);
  EXPECT_LE(test::max_abs_diff(la.data(), lb.data(), la.size()), 2e-5f);
}

TEST(Runtime, SequencesInOneBatchAreIndependent) {
  const std::string dir = test::fixture("models/llama-rand-h256");
  auto g = test::read_json(dir + "/golden_logits.json");
  auto p0 = g["prompts"][0]["input_ids"].get<std::vector<int>>();
  auto p1 = g["prompts"][2]["input_ids"].get<std::vector<int>>();
  auto m = test::load_model(dir, 2, 512, 2);
  const int V = m.rt->n_vocab();
  // Interleave the two prompts token by token in one batch, in two slots.
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < std::max(p0.size(), p1.size()); ++i) {
    if (i < p0.size()) batch.push_back({p0[i], int32_t(i), 0, i + 1 == p0.size()});
    if (i < p1.size()) batch.push_back({p1[i], int32_t(i), 1, i + 1 == p1.size()});
  }
  std::vector<float> out(2 * size_t(V));
  m.rt->forward(batch, out.data());
  // Which of the two finished first decides the order of the logits rows.
  bool p0_first = p0.size() <= p1.size();
  NpyArray l0 = read_npy(dir + "/golden_last_logits_prompt0.npy");
  NpyArray l2 = read_npy(dir + "/golden_last_logits_prompt2.npy");
  EXPECT_LE(test::max_abs_diff(out.data() + (p0_first ? 0 : V), l0.to_f32().data(), size_t(V)), kLogitTol);
  EXPECT_LE(test::max_abs_diff(out.data() + (p0_first ? V : 0), l2.to_f32().data(), size_t(V)), kLogitTol);
}

}  // namespace
}  // namespace metharme
