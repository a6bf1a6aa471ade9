// The sampler where no ordinary draw is possible: temperatures so small that dividing overflows
// (greedy, the limit as T -> 0), bans that cover the vocabulary (refused up front), and logits
// with nothing finite left (a SamplingError saying whether the model or the request is the cause).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "sampling/sampler.h"

namespace metharme {
namespace {

std::vector<float> random_logits(int n, uint32_t seed, float scale = 10.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> d(-scale, scale);
  std::vector<float> v(size_t(n), 0.0f);
  for (auto& x : v) x = d(rng);
  return v;
}

TEST(SamplingFailures, TemperatureThatOverflowsIsGreedy) {
  const int V = 300;
  for (uint32_t seed = 0; seed < 20; ++seed) {
    auto logits = random_logits(V, seed);
    const int best = argmax(logits.data(), V);
    for (float t : {1e-38f, 1e-30f, 1e-37f, std::numeric_limits<float>::denorm_min()}) {
      SamplerParams p;
      p.temperature = t;
      p.seed = seed;
      Sampler s(p, V);
      EXPECT_EQ(s.sample(logits.data(), {}), best) << "T " << t;
      auto dist = s.distribution(logits.data(), {});
      ASSERT_GE(dist.size(), 1u);
      EXPECT_EQ(dist[0].first, best);
      EXPECT_EQ(dist[0].second, 1.0);
      // Overflowing (logits up to 10 divided by T above FLT_MAX): only the best token remains.
      if (10.0 / double(t) > double(std::numeric_limits<float>::max())) {
        EXPECT_EQ(dist.size(), 1u) << "T " << t;
      }
    }
  }
}

TEST(SamplingFailures, SmallTemperatureThatDoesNotOverflowStillDivides) {
  const int V = 50;
  std::vector<float> logits(V, -1.0f);
  logits[7] = 0.0f;
  logits[9] = -0.001f;  // (0 - (-0.001)) / 1e-3 = 1: a real second choice
  SamplerParams p;
  p.temperature = 1e-3f;
  Sampler s(p, V);
  auto dist = s.distribution(logits.data(), {});
  ASSERT_GE(dist.size(), 2u);
  EXPECT_EQ(dist[0].first, 7);
  EXPECT_EQ(dist[1].first, 9);
  EXPECT_NEAR(dist[1].second / dist[0].second, std::exp(-1.0), 1e-4);
}

TEST(SamplingFailures, BansCoveringTheVocabularyAreRefusedUpFront) {
  const int V = 40, eos = 2;
  SamplerParams p;
  for (int i = 0; i < V; ++i) p.banned_tokens.push_back(i);
  EXPECT_NE(sampler_bans_error(p, V, eos).find("every token of the vocabulary (40) is banned"), std::string::npos);
  EXPECT_THROW(Sampler(p, V, eos), Error);
  p.banned_tokens.erase(p.banned_tokens.begin() + eos);  // all but EOS
  EXPECT_EQ(sampler_bans_error(p, V, eos), "");
  p.ban_eos = true;
  EXPECT_NE(sampler_bans_error(p, V, eos).find("EOS by ban_eos_token"), std::string::npos);
  EXPECT_THROW(Sampler(p, V, eos), Error);
  p.banned_tokens.pop_back();  // one token left
  EXPECT_EQ(sampler_bans_error(p, V, eos), "");
  Sampler s(p, V, eos);
  auto logits = random_logits(V, 3);
  EXPECT_EQ(s.sample(logits.data(), {}), V - 1);
  // Duplicates and out-of-range ids do not count as covering.
  SamplerParams d;
  for (int i = 0; i < 3 * V; ++i) d.banned_tokens.push_back(i % (V - 1));
  EXPECT_EQ(sampler_bans_error(d, V, eos), "");
}

TEST(SamplingFailures, NothingFiniteSaysWhoIsToBlame) {
  const int V = 30;
  SamplerParams p;
  p.temperature = 0.7f;
  Sampler s(p, V);
  std::vector<float> nan(V, std::numeric_limits<float>::quiet_NaN());
  try {
    s.sample(nan.data(), {});
    ADD_FAILURE() << "NaN logits sampled";
  } catch (const SamplingError& e) {
    EXPECT_TRUE(e.model_fault());
  }
  std::vector<float> inf(V, 1.0f);
  inf[4] = INFINITY;
  for (int i = 0; i < V; ++i)
    if (i != 4) inf[size_t(i)] = -INFINITY;
  EXPECT_THROW(s.sample(inf.data(), {}), SamplingError);
  // Finite logits, but every unbanned token was set to -inf by the caller (phrase bans): the
  // request is the cause.
  SamplerParams b;
  for (int i = 0; i < V - 2; ++i) b.banned_tokens.push_back(i);
  Sampler sb(b, V);
  auto logits = random_logits(V, 9);
  logits[V - 2] = logits[V - 1] = -INFINITY;
  try {
    sb.sample(logits.data(), {});
    ADD_FAILURE() << "a banned-out row sampled";
  } catch (const SamplingError& e) {
    EXPECT_FALSE(e.model_fault());
  }
}

}  // namespace
}  // namespace metharme
