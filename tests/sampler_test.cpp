// Each KoboldAI sampler against distributions worked out by hand on small logit vectors, the
// effect of sampler_order, bans, logit bias, validation, and seeded reproducibility.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "sampling/sampler.h"
#include "sampling/samplers.h"
#include "util/error.h"

namespace metharme {
namespace {

using Dist = std::vector<std::pair<int, double>>;

// Logits whose softmax is exactly `probs`.
std::vector<float> logits_of(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(float(std::log(p)));
  return l;
}

// Every sampler off, temperature 1: the raw softmax.
SamplerParams neutral() {
  SamplerParams p;
  p.temperature = 1;
  return p;
}

Dist run(const SamplerParams& p, const std::vector<float>& logits, const std::vector<int>& history = {}) {
  Sampler s(p, int(logits.size()));
  return s.distribution(logits.data(), history);
}

// want: {id, probability} in the order the sampler must report (most likely first).
void expect_dist(const Dist& got, const Dist& want, double tol = 1e-5) {
  ASSERT_EQ(got.size(), want.size()) << "number of surviving tokens";
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ(got[i].first, want[i].first) << "rank " << i;
    EXPECT_NEAR(got[i].second, want[i].second, tol) << "token " << want[i].first;
  }
}

const std::vector<double> kP4 = {0.5, 0.25, 0.15, 0.1};

TEST(Sampler, NeutralIsTheSoftmax) {
  expect_dist(run(neutral(), logits_of(kP4)), {{0, 0.5}, {1, 0.25}, {2, 0.15}, {3, 0.1}});
}

TEST(Sampler, TemperatureTwoTakesSquareRoots) {
  auto p = neutral();
  p.temperature = 2;
  // p^(1/2): .70711 .5 .38730 .31623, sum 1.91064
  expect_dist(run(p, logits_of(kP4)), {{0, 0.370087}, {1, 0.261693}, {2, 0.202704}, {3, 0.165508}});
}

TEST(Sampler, TemperatureZeroIsGreedy) {
  auto p = neutral();
  p.temperature = 0;
  expect_dist(run(p, logits_of({0.1, 0.2, 0.6, 0.1})), {{2, 1.0}});
}

TEST(Sampler, TopK) {
  auto p = neutral();
  p.top_k = 2;
  expect_dist(run(p, logits_of(kP4)), {{0, 2.0 / 3}, {1, 1.0 / 3}});
  p.top_k = 10;  // more than the vocabulary: nothing removed
  EXPECT_EQ(run(p, logits_of(kP4)).size(), 4u);
}

TEST(Sampler, TopA) {
  auto p = neutral();
  p.top_a = 0.5f;  // threshold 0.5 * 0.5^2 = 0.125: drops 0.1
  expect_dist(run(p, logits_of(kP4)), {{0, 0.5 / 0.9}, {1, 0.25 / 0.9}, {2, 0.15 / 0.9}});
  p.top_a = 0.9f;  // threshold 0.225: keeps 0.5 and 0.25
  expect_dist(run(p, logits_of(kP4)), {{0, 2.0 / 3}, {1, 1.0 / 3}});
}

TEST(Sampler, TopP) {
  auto p = neutral();
  p.top_p = 0.7f;  // 0.5, then 0.75 >= 0.7: two tokens
  expect_dist(run(p, logits_of(kP4)), {{0, 2.0 / 3}, {1, 1.0 / 3}});
  p.top_p = 0.8f;  // 0.5, 0.75, 0.9 >= 0.8: three
  expect_dist(run(p, logits_of(kP4)), {{0, 0.5 / 0.9}, {1, 0.25 / 0.9}, {2, 0.15 / 0.9}});
  p.top_p = 0.0f;  // always at least one token
  expect_dist(run(p, logits_of(kP4)), {{0, 1.0}});
}

TEST(Sampler, MinP) {
  auto p = neutral();
  p.min_p = 0.4f;  // keep p >= 0.4 * 0.5 = 0.2
  expect_dist(run(p, logits_of(kP4)), {{0, 2.0 / 3}, {1, 1.0 / 3}});
  p.min_p = 0.25f;  // keep p >= 0.125
  expect_dist(run(p, logits_of(kP4)), {{0, 0.5 / 0.9}, {1, 0.25 / 0.9}, {2, 0.15 / 0.9}});
}

TEST(Sampler, TailFree) {
  // p = .35 .25 .20 .10 .06 .04; first differences .10 .05 .10 .04 .02; second differences
  // |.05| |-.05| |.06| |.02| (sum .18) -> .2778 .2778 .3333 .1111, running sum .2778 .5556 .8889 1.
  const std::vector<double> p6 = {0.35, 0.25, 0.20, 0.10, 0.06, 0.04};
  auto p = neutral();
  p.tfs = 0.6f;  // the running sum first passes 0.6 at i = 2: keep the two tokens before it
  expect_dist(run(p, logits_of(p6)), {{0, 0.35 / 0.6}, {1, 0.25 / 0.6}});
  p.tfs = 0.95f;  // passes 0.95 at i = 3: keep 3 tokens
  expect_dist(run(p, logits_of(p6)), {{0, 0.35 / 0.8}, {1, 0.25 / 0.8}, {2, 0.20 / 0.8}});
}

TEST(Sampler, Typical) {
  // H = 1.20797 nats; |surprise - H| = .5148 .1783 .6892 1.0946: most typical order is 1, 0, 2, 3.
  auto p = neutral();
  p.typical = 0.5f;  // .25, then .75 > .5: tokens 1 and 0
  expect_dist(run(p, logits_of(kP4)), {{0, 2.0 / 3}, {1, 1.0 / 3}});
  p.typical = 0.8f;  // .25 .75 .90 > .8: tokens 1, 0, 2
  expect_dist(run(p, logits_of(kP4)), {{0, 0.5 / 0.9}, {1, 0.25 / 0.9}, {2, 0.15 / 0.9}});
  p.typical = 0.2f;  // .25 > .2 at once: only the most typical token, which is not the most likely
  expect_dist(run(p, logits_of(kP4)), {{1, 1.0}});
}

std::vector<double> softmax(const std::vector<double>& l) {
  double s = 0;
  std::vector<double> out;
  for (double v : l) s += std::exp(v);
  for (double v : l) out.push_back(std::exp(v) / s);
  return out;
}

TEST(Sampler, RepetitionPenaltyDividesPositiveAndMultipliesNegativeLogits) {
  const std::vector<float> logits = {2, 1, -1, 0.5f};
  auto p = neutral();
  p.rep_pen = 2;
  // Token 0 (logit 2) and token 2 (logit -1) were seen: 2 / 2 = 1, -1 * 2 = -2.
  auto want = softmax({1, 1, -2, 0.5});
  expect_dist(run(p, logits, {0, 2}), {{0, want[0]}, {1, want[1]}, {3, want[3]}, {2, want[2]}});
}

TEST(Sampler, RepetitionPenaltySlopeRangeAndPresence) {
  const std::vector<float> logits = {2, 1, -1, 0.5f};
  auto p = neutral();
  p.rep_pen = 2;
  p.rep_pen_slope = 0.5f;
  p.rep_pen_range = 2;
  // Window [0, 2]: token 0 is in the older half (penalty 1 + (2-1)*0.5 = 1.5), token 2 in the newer.
  auto want = softmax({2 / 1.5, 1, -2, 0.5});
  expect_dist(run(p, logits, {0, 2}), {{0, want[0]}, {1, want[1]}, {3, want[3]}, {2, want[2]}});
  // Range 2 over history [1, 0, 2]: token 1 is outside the window.
  p.rep_pen_range = 2;
  expect_dist(run(p, logits, {1, 0, 2}), {{0, want[0]}, {1, want[1]}, {3, want[3]}, {2, want[2]}});
  // Range 0 is one token, as in KoboldCpp (its window is never empty); presence is subtracted once.
  p.rep_pen_range = 0;
  p.presence_penalty = 0.25f;
  auto want2 = softmax({2 / 2.0 - 0.25, 1, -1, 0.5});
  expect_dist(run(p, logits, {0, 0}), {{1, want2[1]}, {0, want2[0]}, {3, want2[3]}, {2, want2[2]}});
}

TEST(Sampler, OrderChangesTheResultWhereItShould) {
  auto p = neutral();
  p.top_p = 0.7f;
  p.temperature = 2;
  // top-p first keeps .5 and .25, then T=2: sqrt(.5) : sqrt(.25) = .5858 : .4142
  p.sampler_order = {6, 0, 1, 3, 4, 2, 5};
  expect_dist(run(p, logits_of(kP4)), {{0, 0.585786}, {1, 0.414214}});
  // T=2 first flattens to .3701 .2617 .2027 .1655; top-p 0.7 then needs three tokens.
  p.sampler_order = {6, 5, 0, 1, 3, 4, 2};
  expect_dist(run(p, logits_of(kP4)), {{0, 0.443489}, {1, 0.313597}, {2, 0.242906}});
  // Top-k and top-p commute with a monotone temperature when nothing else intervenes.
  auto q = neutral();
  q.top_k = 3;
  q.temperature = 0.5f;
  q.sampler_order = {0, 5, 1, 2, 3, 4, 6};
  auto a = run(q, logits_of(kP4));
  q.sampler_order = {5, 0, 1, 2, 3, 4, 6};
  expect_dist(run(q, logits_of(kP4)), a);
}

TEST(Sampler, RepPenaltyBeforeOrAfterTemperature) {
  // Dividing a positive logit by the penalty before or after temperature gives the same value,
  // but top-k after the penalty sees the penalized ranking.
  auto p = neutral();
  p.rep_pen = 4;
  p.top_k = 1;
  const std::vector<float> logits = {2, 1, 0, -1};
  p.sampler_order = {6, 0, 1, 2, 3, 4, 5};  // penalty first: token 0 drops to 0.5, token 1 wins
  expect_dist(run(p, logits, {0}), {{1, 1.0}});
  p.sampler_order = {0, 1, 2, 3, 4, 5, 6};  // top-k first: only token 0 is left to penalize
  expect_dist(run(p, logits, {0}), {{0, 1.0}});
}

TEST(Sampler, BansAndLogitBias) {
  auto p = neutral();
  p.banned_tokens = {0};
  expect_dist(run(p, logits_of(kP4)), {{1, 0.5}, {2, 0.3}, {3, 0.2}});
  auto q = neutral();
  q.ban_eos = true;  // EOS is id 2 by default
  expect_dist(run(q, logits_of(kP4)), {{0, 0.5 / 0.85}, {1, 0.25 / 0.85}, {3, 0.1 / 0.85}});
  q.temperature = 0;  // even a certain EOS is never picked
  Sampler s(q, 4, 2);
  auto l = logits_of({0.01, 0.01, 0.97, 0.01});
  EXPECT_EQ(s.sample(l.data(), {}), 0);
  auto b = neutral();
  b.logit_bias = {{3, float(std::log(2.0))}};  // doubles token 3: .5 .25 .15 .2 over 1.1
  expect_dist(run(b, logits_of(kP4)), {{0, 0.5 / 1.1}, {1, 0.25 / 1.1}, {3, 0.2 / 1.1}, {2, 0.15 / 1.1}});
}

TEST(Sampler, ValidationNamesTheField) {
  auto err = [](SamplerParams p) { return sampler_params_error(p, 10); };
  SamplerParams p;
  EXPECT_EQ(err(p), "");
  p.top_p = 1.5f;
  EXPECT_NE(err(p).find("top_p"), std::string::npos);
  p = {};
  p.sampler_order = {6, 0, 1, 1, 4, 2, 5};
  EXPECT_NE(err(p).find("appears twice"), std::string::npos);
  p.sampler_order = {7};
  EXPECT_NE(err(p).find("not a sampler id"), std::string::npos);
  p = {};
  p.banned_tokens = {10};
  EXPECT_NE(err(p).find("outside the vocabulary"), std::string::npos);
  p = {};
  p.temperature = NAN;
  EXPECT_NE(err(p).find("temperature"), std::string::npos);
  p = {};
  p.banned_tokens = {0, 1, 2, 3};
  EXPECT_THROW(Sampler(p, 4), Error);
  // United accepts six entries without the repetition penalty and puts it first.
  EXPECT_EQ(normalize_order({0, 1, 2, 3, 4, 5}), (std::vector<int>{6, 0, 1, 2, 3, 4, 5}));
  EXPECT_EQ(parse_sampler_order("6,0, 1 3,4,2,5"), (std::vector<int>{6, 0, 1, 3, 4, 2, 5}));
  EXPECT_THROW(parse_sampler_order("6,x"), Error);
}

// The cut keeps exactly the n first tokens in (logit descending, id ascending) order, whatever
// the logits: ties across the cut, -0 beside +0, -inf, huge and tiny values.
TEST(Sampler, KeepMostLikelyMatchesAFullSort) {
  std::mt19937 gen(11);
  const float pool[] = {0.0f, -0.0f, 1.5f, -1.5f, -INFINITY, 3e38f, -3e38f, 1e-40f, -1e-40f, 7.25f};
  for (int round = 0; round < 200; ++round) {
    const size_t size = 1 + gen() % 6000;
    Candidates c;
    for (size_t i = 0; i < size; ++i) {
      float v = gen() % 3 == 0 ? pool[gen() % std::size(pool)] : std::normal_distribution<float>(0, 4)(gen);
      if (gen() % 2 == 0) v = std::round(v);  // many equal logits
      c.items.push_back({int32_t(i), v});
    }
    const size_t n = 1 + gen() % size;
    std::vector<Candidate> ref = c.items;
    std::stable_sort(ref.begin(), ref.end(), [](const Candidate& a, const Candidate& b) { return a.logit > b.logit; });
    ref.resize(n);
    std::sort(ref.begin(), ref.end(), [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
    keep_most_likely(c, n);
    ASSERT_EQ(c.items.size(), n) << "round " << round;
    std::sort(c.items.begin(), c.items.end(), [](const Candidate& a, const Candidate& b) { return a.id < b.id; });
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(c.items[i].id, ref[i].id) << "round " << round << " item " << i;
      ASSERT_EQ(c.items[i].logit, ref[i].logit);
    }
  }
}

TEST(Sampler, SeedReproducesAndFrequenciesFollowTheDistribution) {
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0, 2);
  std::vector<float> logits(300);
  for (float& v : logits) v = nd(gen);
  SamplerParams p;
  p.temperature = 0.9f;
  p.top_k = 40;
  p.top_p = 0.95f;
  p.rep_pen = 1.1f;
  p.seed = 1234;
  auto draw = [&](uint64_t seed) {
    SamplerParams q = p;
    q.seed = seed;
    Sampler s(q, 300);
    std::vector<int> hist, out;
    for (int i = 0; i < 200; ++i) {
      int t = s.sample(logits.data(), hist);
      out.push_back(t);
      hist.push_back(t);
    }
    return out;
  };
  EXPECT_EQ(draw(1234), draw(1234));
  EXPECT_NE(draw(1234), draw(1235));

  Sampler s(neutral(), 4);
  auto l = logits_of(kP4);
  std::map<int, int> count;
  const int n = 40000;
  for (int i = 0; i < n; ++i) ++count[s.sample(l.data(), {})];
  for (int t = 0; t < 4; ++t) EXPECT_NEAR(double(count[t]) / n, kP4[size_t(t)], 0.01) << "token " << t;
}

}  // namespace
}  // namespace metharme
