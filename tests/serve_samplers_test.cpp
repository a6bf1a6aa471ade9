// KoboldCpp's sampler fields over HTTP, in the shapes SillyTavern and KoboldAI Lite send them:
// accepted on the Kobold and OpenAI routes, refused by name when out of range or unsupported;
// min_tokens and add_bos_token in the engine.
#include <gtest/gtest.h>

#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::TestServer;

// SillyTavern's Text Completion -> KoboldCpp body with every sampler of its panel switched on.
json st_text_completion_body() {
  return {{"prompt", "Once upon a time"},
          {"max_tokens", 12},
          {"max_new_tokens", 12},
          {"temperature", 1.0},
          {"dynamic_temperature", true},
          {"dynatemp_low", 0.5},
          {"dynatemp_high", 1.5},
          {"dynatemp_range", 0.5},
          {"dynatemp_exponent", 1},
          {"smoothing_factor", 0.3},
          {"smoothing_curve", 1},
          {"dry_allowed_length", 2},
          {"dry_multiplier", 0.8},
          {"dry_base", 1.75},
          {"dry_sequence_breakers", "[\"\\n\", \":\", \"\\\"\", \"*\"]"},
          {"dry_penalty_last_n", 0},
          {"mirostat_mode", 0},
          {"mirostat", 0},
          {"mirostat_tau", 5},
          {"mirostat_eta", 0.1},
          {"xtc_threshold", 0.1},
          {"xtc_probability", 0.5},
          {"nsigma", 1.5},
          {"top_n_sigma", 1.5},
          {"min_tokens", 4},
          {"add_bos_token", true},
          {"ignore_eos", false},
          {"ban_eos_token", false},
          {"skew", 0},
          {"guidance_scale", 1},
          {"negative_prompt", ""},
          {"sampler_seed", 7},
          {"seed", 7},
          {"rep_pen", 1.1},
          {"rep_pen_range", 0},
          {"sampler_order", {6, 0, 1, 3, 4, 2, 5}}};
}

TEST(ServeSamplers, SillyTavernTextCompletionWithEverySamplerOn) {
  TestServer s;
  auto r = s.post("/v1/completions", st_text_completion_body());
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.json()["choices"][0]["text"].get<std::string>().empty());
  // Mirostat 2 instead of the sampler order.
  json b = st_text_completion_body();
  b["mirostat_mode"] = 2;
  b["mirostat"] = 2;
  r = s.post("/v1/completions", b);
  ASSERT_EQ(r.status, 200) << r.body;
  // The same seed gives the same text (the samplers' draws come from the request's seed).
  auto again = s.post("/v1/completions", b);
  EXPECT_EQ(again.json()["choices"][0]["text"], r.json()["choices"][0]["text"]);
}

TEST(ServeSamplers, KoboldLiteBodyWithDryXtcAndNsigma) {
  TestServer s;
  json b = {{"prompt", "Once upon a time"},
            {"max_length", 12},
            {"max_context_length", 512},
            {"temperature", 0.7},
            {"rep_pen", 1.07},
            {"rep_pen_range", 360},
            {"rep_pen_slope", 0.7},
            {"sampler_order", {6, 0, 1, 3, 4, 2, 5}},
            {"mirostat", 1},
            {"mirostat_tau", 5.0},
            {"mirostat_eta", 0.1},
            {"min_p", 0},
            {"dynatemp_range", 0},
            {"dynatemp_exponent", 1},
            {"smoothing_factor", 0},
            {"smoothing_curve", 1},
            {"nsigma", 0},
            {"dry_multiplier", 0.8},
            {"dry_base", 1.75},
            {"dry_allowed_length", 2},
            {"dry_penalty_last_n", 320},
            {"dry_sequence_breakers", {"\n", ":", "\"", "*"}},
            {"xtc_threshold", 0.2},
            {"xtc_probability", 0.5},
            {"adaptive_target", -1.0},
            {"adaptive_decay", 0.9},
            {"presence_penalty", 0},
            {"sampler_seed", 3}};
  auto r = s.post("/api/v1/generate", b);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.json()["results"][0]["text"].get<std::string>().empty());
}

TEST(ServeSamplers, OutOfRangeOrUnsupportedFieldsAreRefusedByName) {
  TestServer s;
  auto refused = [&](json extra) {
    json b = {{"prompt", "Hi"}, {"max_length", 2}};
    for (auto& [k, v] : extra.items()) b[k] = v;
    auto r = s.post("/api/v1/generate", b);
    EXPECT_EQ(r.status, 422) << b.dump();
    return r.status == 422 ? r.json()["detail"] : json::object();
  };
  EXPECT_TRUE(refused({{"mirostat", 3}}).contains("mirostat"));
  EXPECT_TRUE(refused({{"mirostat", 1}, {"mirostat_mode", 2}}).contains("mirostat_mode"));
  EXPECT_TRUE(refused({{"xtc_probability", 1.5}}).contains("xtc_probability"));
  EXPECT_TRUE(refused({{"dry_base", 0}}).contains("dry_base"));
  json many = json::array();
  for (int i = 0; i < 25; ++i) many.push_back("b" + std::to_string(i));
  EXPECT_TRUE(refused({{"dry_multiplier", 0.8}, {"dry_sequence_breakers", many}}).contains("dry_sequence_breakers"));
  EXPECT_TRUE(
      refused({{"dry_multiplier", 0.8}, {"dry_sequence_breakers", "\\n, :"}}).contains("dry_sequence_breakers"));
  EXPECT_TRUE(refused({{"dynatemp_low", 1.5}, {"dynatemp_high", 0.5}}).contains("dynatemp_low"));
  EXPECT_TRUE(refused({{"adaptive_target", 0.5}}).contains("adaptive_target"));
  EXPECT_TRUE(refused({{"guidance_scale", 1.5}, {"negative_prompt", "sad"}}).contains("guidance_scale"));
  EXPECT_TRUE(refused({{"min_tokens", -1}}).contains("min_tokens"));
  // A breaker string that is not JSON only matters while DRY is on (KoboldCpp drops it).
  EXPECT_EQ(
      s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}, {"dry_sequence_breakers", "\\n, :"}}).status,
      200);
  // The OpenAI routes name the field too.
  auto r = s.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}, {"nsigma", "wide"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["param"], "nsigma");
}

serve::GenSpec greedy(std::vector<int> prompt, int max_new) {
  serve::GenSpec g;
  g.prompt = std::move(prompt);
  g.max_new = max_new;
  g.sampler.temperature = 0;
  return g;
}

std::shared_ptr<serve::Job> run(TestServer& s, serve::GenSpec g) {
  auto j = s.engine().submit(std::move(g));
  while (!j->done()) j->wait(j->text().size(), std::chrono::milliseconds(10));
  return j;
}

TEST(ServeSamplers, MinTokensHoldsBackStopStringsAndEos) {
  TestServer s;
  const auto prompt = s.tok().encode("Once upon a time", true);
  auto g = greedy(prompt, 60);
  g.stop = {"."};
  auto first = run(s, g);
  ASSERT_EQ(first->finish(), serve::Finish::kStop);
  const int k = int(first->tokens().size());  // the token that completed the first "."
  g.min_tokens = k + 5;
  auto later = run(s, g);
  EXPECT_GE(int(later->tokens().size()), k + 5);
  // The first sentence is still there: the stop string only ends the reply from min_tokens on.
  EXPECT_EQ(later->text().substr(0, first->text().size()), first->text());
  EXPECT_GT(later->text().size(), first->text().size());
  // EOS: the greedy reply that ends at EOS goes on when min_tokens asks for more.
  auto e = greedy(prompt, 200);
  auto to_eos = run(s, e);
  if (to_eos->finish() == serve::Finish::kEos) {
    e.min_tokens = int(to_eos->tokens().size()) + 3;
    auto longer = run(s, e);
    EXPECT_GE(int(longer->tokens().size()), e.min_tokens);
  }
}

TEST(ServeSamplers, AddBosTokenFalseDropsTheBos) {
  TestServer s;
  auto with = s.post("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 3}});
  auto without =
      s.post("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 3}, {"add_bos_token", false}});
  ASSERT_EQ(with.status, 200);
  ASSERT_EQ(without.status, 200);
  EXPECT_EQ(without.json()["usage"]["prompt_tokens"].get<int>() + 1, with.json()["usage"]["prompt_tokens"].get<int>());
}

}  // namespace
}  // namespace metharme
