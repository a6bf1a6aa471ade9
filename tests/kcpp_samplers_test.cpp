// KoboldCpp's samplers beside sampler_order (DRY, XTC, Mirostat, dynamic temperature, smoothing,
// top-n-sigma) and its repetition-penalty window, on small distributions worked out by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <map>
#include <random>

#include "sampling/dry.h"
#include "sampling/sampler.h"
#include "sampling/samplers.h"

namespace metharme {
namespace {

using Dist = std::vector<std::pair<int, double>>;

std::vector<double> softmax(const std::vector<double>& l) {
  double mx = l[0], sum = 0;
  for (double v : l) mx = std::max(mx, v);
  std::vector<double> p;
  for (double v : l) p.push_back(std::exp(v - mx)), sum += std::exp(v - mx);
  for (double& v : p) v /= sum;
  return p;
}

SamplerParams neutral() {
  SamplerParams p;
  p.temperature = 1;
  return p;
}

Dist run(const SamplerParams& p, const std::vector<float>& logits, const std::vector<int>& history = {}) {
  Sampler s(p, int(logits.size()));
  return s.distribution(logits.data(), history);
}

// The probability of each id in a reported distribution (0 when it was cut).
std::vector<double> by_id(const Dist& d, size_t n) {
  std::vector<double> out(n, 0.0);
  for (const auto& [id, p] : d) out[size_t(id)] = p;
  return out;
}

void expect_probs(const Dist& got, const std::vector<double>& want, double tol = 1e-5) {
  auto p = by_id(got, want.size());
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(p[i], want[i], tol) << "token " << i;
}

TEST(KcppSamplers, DryPenalizesTheTokenThatExtendsARepeat) {
  const std::vector<float> logits(6, 0.0f);
  auto p = neutral();
  p.dry_multiplier = 1;
  p.dry_base = 2;
  p.dry_allowed_length = 2;
  // "1 2 3 4 1 2 3": the last three tokens repeat positions 0..2, which 4 followed; emitting 4
  // would make the repeat 4 long. Penalty 1 * 2^(3 - 2) = 2 on token 4 only.
  const std::vector<int> h = {1, 2, 3, 4, 1, 2, 3};
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, -2, 0}));
  // Allowed length 1: 2^(3 - 1) = 4.
  p.dry_allowed_length = 1;
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, -4, 0}));
  // A window of 4 tokens ("4 1 2 3") holds no earlier "1 2 3": nothing.
  p.dry_penalty_last_n = 4;
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, 0, 0}));
  // ...and neither does a context of 4 (dry_penalty_last_n 0 = the whole context).
  p.dry_penalty_last_n = 0;
  p.n_ctx = 4;
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, 0, 0}));
  p.n_ctx = 0;
  // Token 2 as a breaker: the repeat may only count the one token after it, below the
  // allowed length of 2.
  p.dry_allowed_length = 2;
  p.dry_breakers = {{2}};
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, 0, 0}));
  // A two-token breaker "3 5" never occurs, so it changes nothing.
  p.dry_breakers = {{3, 5}};
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, -2, 0}));
  // "4 1" does (positions 3-4): a repeat may count only the two tokens after it ("2 3"): with
  // allowed length 1 the run "1 2 3" counts as 2, penalty 1 * 2^(2 - 1) = 2; with 2, nothing.
  p.dry_breakers = {{4, 1}};
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, 0, 0}));
  p.dry_allowed_length = 1;
  expect_probs(run(p, logits, h), softmax({0, 0, 0, 0, -2, 0}));
}

// DRY by its definition, quadratic: for every earlier position i, the longest run ending at i
// that equals the run ending at the newest token (at most `limit` long), credited to the token
// after i; the penalty uses the longest run per token.
std::map<int, float> dry_by_definition(const std::vector<int>& w, int allowed, float mult, float base, int limit) {
  const int n = int(w.size());
  std::map<int, int> longest;
  for (int i = 0; i + 1 < n; ++i) {
    int len = 0;
    while (len <= i && w[size_t(i - len)] == w[size_t(n - 1 - len)]) ++len;
    len = std::min(len, limit);
    if (len >= allowed) longest[w[size_t(i + 1)]] = std::max(longest[w[size_t(i + 1)]], len);
  }
  std::map<int, float> out;
  for (auto [tok, len] : longest) out[tok] = float(mult * std::pow(double(base), len - allowed));
  return out;
}

TEST(KcppSamplers, DryMatchesItsDefinitionOnRandomHistories) {
  std::mt19937 g(5);
  for (int trial = 0; trial < 300; ++trial) {
    const int n = 2 + int(g() % 60), alphabet = 2 + int(g() % 4);
    std::vector<int> w(static_cast<size_t>(n));
    for (int& t : w) t = int(g() % uint32_t(alphabet));
    // Sometimes a one-token breaker (token 0), which limits runs to the tokens after its last use.
    const bool brk = trial % 3 == 0;
    int limit = n;
    if (brk)
      for (int i = n - 1; i >= 0; --i)
        if (w[size_t(i)] == 0) {
          limit = n - 1 - i;
          break;
        }
    const int allowed = 1 + int(g() % 3);
    Dry dry(0.5f, 1.5f, allowed, 0, brk ? std::vector<std::vector<int>>{{0}} : std::vector<std::vector<int>>{});
    std::map<int, float> got;
    for (auto [tok, pen] : dry.penalties(w, 0)) got[tok] = pen;
    std::map<int, float> want;
    if (limit > allowed) want = dry_by_definition(w, allowed, 0.5f, 1.5f, limit);
    ASSERT_EQ(got.size(), want.size()) << "trial " << trial;
    for (auto [tok, pen] : want) EXPECT_NEAR(got[tok], pen, 1e-5) << "trial " << trial << " token " << tok;
  }
}

TEST(KcppSamplers, DryRunsBeforeTopK) {
  // Token 0 leads (3 vs 2.5), but after "0 1 0 1" it would make the repeat of "0 1" three
  // long: penalty 1 * 1.75^(2 - 2) = 1, logit 2. Top-k 1 then keeps token 1.
  auto p = neutral();
  p.dry_multiplier = 1;
  p.top_k = 1;
  const std::vector<float> logits = {3, 2.5f, 0, 0};
  Dist d = run(p, logits, {0, 1, 0, 1});
  ASSERT_EQ(d.size(), 1u);
  EXPECT_EQ(d[0].first, 1);
}

TEST(KcppSamplers, DryBreakersAreTokenizedAsKoboldCppDoes) {
  // Token texts; "x:" ends with the first byte of ":y", so it heads the sequence "x:" + encode("y").
  const std::vector<std::string> text = {"a", "b\n", "\n", "x:", "y", "\xC3\xA9"};
  auto tt = [&](int id) { return text[size_t(id)]; };
  int encodes = 0;
  auto enc = [&](const std::string& s) {
    ++encodes;
    return s == "y" ? std::vector<int>{4} : std::vector<int>{0, 0};
  };
  auto seqs = dry_breaker_sequences({"\n", ":y", "", "\xC3\xA9"}, 6, tt, enc);
  std::vector<std::vector<int>> want = {{1}, {2}, {3, 4}, {5}};
  EXPECT_EQ(seqs, want);
  EXPECT_EQ(encodes, 1);
  // Breakers are cut to 40 bytes and tails to 20 tokens.
  auto long_tail = [](const std::string&) { return std::vector<int>(30, 0); };
  seqs = dry_breaker_sequences({":" + std::string(60, 'z')}, 6, tt, long_tail);
  ASSERT_EQ(seqs.size(), 1u);
  EXPECT_EQ(seqs[0].size(), 1 + kDryMaxTail);
}

TEST(KcppSamplers, XtcWithAFixedDraw) {
  const std::vector<double> p0 = {0.4, 0.3, 0.2, 0.1};
  auto make = [&] {
    Candidates c;
    for (int i = 0; i < 4; ++i) c.items.push_back({i, float(std::log(p0[size_t(i)]))});
    return c;
  };
  // 0.4 and 0.3 pass the threshold 0.25: all but the least likely of them (token 0) lose 999.
  Candidates c = make();
  apply_xtc(c, 0.25f, 0.5f, 0.3);
  c.sort();
  c.softmax();
  ASSERT_EQ(c.items.size(), 4u);
  EXPECT_EQ(c.items[0].id, 1);
  EXPECT_NEAR(c.p[0], 0.5, 1e-6);
  EXPECT_NEAR(c.p[1], 2.0 / 6, 1e-6);
  EXPECT_NEAR(c.p[2], 1.0 / 6, 1e-6);
  EXPECT_EQ(c.items[3].id, 0);
  EXPECT_LT(c.p[3], 1e-300);
  // A draw at or above the probability, a threshold above 0.5, or one token above: nothing.
  for (auto [thr, roll] : {std::pair{0.25f, 0.5}, std::pair{0.6f, 0.0}, std::pair{0.35f, 0.0}}) {
    Candidates d = make();
    apply_xtc(d, thr, 0.5f, roll);
    d.softmax();
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(d.p[i], p0[i], 1e-6);
  }
}

TEST(KcppSamplers, XtcDrawsFromTheSamplersGenerator) {
  auto p = neutral();
  p.xtc_threshold = 0.25f;
  p.xtc_probability = 1;  // every draw passes: token 0 never comes out
  const std::vector<float> logits = {float(std::log(0.4)), float(std::log(0.3)), float(std::log(0.2)),
                                     float(std::log(0.1))};
  Sampler s(p, 4);
  for (int i = 0; i < 200; ++i) EXPECT_NE(s.sample(logits.data(), {}), 0);
}

TEST(KcppSamplers, MirostatV2CutAndMuUpdate) {
  // Surprises 1, 2, 3, 3 bits; mu starts at 2 * tau = 2.4: tokens 0 and 1 stay, 2/3 and 1/3.
  auto p = neutral();
  p.mirostat = 2;
  p.mirostat_tau = 1.2f;
  p.mirostat_eta = 0.5f;
  p.top_k = 1;  // sampler_order is not used with Mirostat
  const std::vector<float> logits = {float(std::log(0.5)), float(std::log(0.25)), float(std::log(0.125)),
                                     float(std::log(0.125))};
  expect_probs(run(p, logits), {2.0 / 3, 1.0 / 3, 0, 0});
  for (uint64_t seed = 0; seed < 8; ++seed) {
    p.seed = seed;
    Sampler s(p, 4);
    EXPECT_NEAR(s.mirostat_mu(), 2.4, 1e-6);
    int t = s.sample(logits.data(), {});
    ASSERT_TRUE(t == 0 || t == 1);
    // mu -= eta * (surprise in the cut set - tau).
    const double surprise = t == 0 ? std::log2(1.5) : std::log2(3.0);
    EXPECT_NEAR(s.mirostat_mu(), 2.4 - 0.5 * (surprise - 1.2), 1e-6);
  }
}

TEST(KcppSamplers, MirostatV1TopKFromTheZipfExponent) {
  // p_i proportional to 1/i^2 over 8 tokens: the estimated exponent is exactly 2, eps = 1, and
  // with mu = 2 * tau = 4: k = (1 * 2^4 / (1 - 8^-1))^(1/2) = 4.28, so the top 4 stay.
  std::vector<float> logits;
  std::vector<double> w;
  for (int i = 1; i <= 8; ++i) logits.push_back(float(-2 * std::log(double(i)))), w.push_back(1.0 / (i * i));
  auto p = neutral();
  p.mirostat = 1;
  p.mirostat_tau = 2;
  const double z = w[0] + w[1] + w[2] + w[3];
  expect_probs(run(p, logits), {w[0] / z, w[1] / z, w[2] / z, w[3] / z, 0, 0, 0, 0});
  // mu = 2: k = (4 / 0.875)^(1/2) = 2.14: the top 2.
  p.mirostat_tau = 1;
  expect_probs(run(p, logits), {w[0] / (w[0] + w[1]), w[1] / (w[0] + w[1]), 0, 0, 0, 0, 0, 0});
}

TEST(KcppSamplers, DynamicTemperatureFollowsTheEntropy) {
  // p = .5 .25 .15 .1: H = 1.20799 nats, ln 4 = 1.38629, H / ln 4 = 0.871382.
  const std::vector<double> p0 = {0.5, 0.25, 0.15, 0.1};
  std::vector<float> logits;
  for (double v : p0) logits.push_back(float(std::log(v)));
  auto p = neutral();
  p.dynatemp_range = 0.5f;  // temperature 1 +- 0.5: from 0.5 to 1.5
  auto with_t = [&](double t) {
    std::vector<double> l;
    for (double v : p0) l.push_back(std::log(v) / t);
    return softmax(l);
  };
  expect_probs(run(p, logits), with_t(0.5 + 1.0 * 0.871382), 2e-5);
  p.dynatemp_exponent = 2;
  expect_probs(run(p, logits), with_t(0.5 + 1.0 * 0.871382 * 0.871382), 2e-5);
  // A range below the temperature's distance to 0 clips at 0: 0.3 +- 0.5 is 0 .. 0.8.
  p.temperature = 0.3f;
  p.dynatemp_exponent = 1;
  expect_probs(run(p, logits), with_t(0.8 * 0.871382), 2e-5);
  // Equal logits: the full entropy, so the top of the range (no visible change).
  expect_probs(run(p, {0, 0, 0}), {1.0 / 3, 1.0 / 3, 1.0 / 3});
}

TEST(KcppSamplers, SmoothingIsTheQuadraticAroundTheTopLogit) {
  auto p = neutral();
  p.smoothing_factor = 0.5f;
  // h = 2, d = 0, -1, -2: 2 - 0.5 d^2 = 2, 1.5, 0.
  expect_probs(run(p, {2, 1, 0}), softmax({2, 1.5, 0}));
  // Curve 2: k = 0.5, s = 0.5: d = -1 -> 2 - .25 - .25 = 1.5; d = -2 -> 2 - 1 - 2 = -1.
  p.smoothing_curve = 2;
  expect_probs(run(p, {2, 1, 0}), softmax({2, 1.5, -1}));
  // After the temperature (2): logits 1, .5, 0, then h = 1: 1, 1 - .125, 1 - .5.
  p.smoothing_curve = 1;
  p.temperature = 2;
  expect_probs(run(p, {2, 1, 0}), softmax({1, 0.875, 0.5}));
}

TEST(KcppSamplers, NsigmaCutsBelowMaxMinusNStandardDeviations) {
  // Logits 4 3 1 0 -3: mean 1, variance (9+4+0+1+16)/5 = 6, sd 2.449.
  const std::vector<float> logits = {4, 3, 1, 0, -3};
  auto p = neutral();
  p.nsigma = 1;  // cut at 1.551: 4 and 3 stay
  expect_probs(run(p, logits), {softmax({4, 3})[0], softmax({4, 3})[1], 0, 0, 0});
  p.nsigma = 2;  // cut at -0.899: 4 3 1 0 stay
  auto s = softmax({4, 3, 1, 0});
  expect_probs(run(p, logits), {s[0], s[1], s[2], s[3], 0});
  // It runs after the temperature, in the same slot: T = 0 leaves one token anyway.
  p.temperature = 0;
  expect_probs(run(p, logits), {1, 0, 0, 0, 0});
}

TEST(KcppSamplers, RepPenWindowIsKoboldCpps) {
  const std::vector<float> logits(6, 1.0f);
  auto p = neutral();
  p.rep_pen = 2;
  p.rep_pen_slope = 0.5f;
  // Range 4 over "3 3 5": the window is "0 3 3 5" (filled with token 0 at its front); older half
  // "0 3", newer "3 5": token 0 gets 1 + (2 - 1) * 0.5 = 1.5, tokens 3 and 5 get 2.
  p.rep_pen_range = 4;
  expect_probs(run(p, logits, {3, 3, 5}), softmax({1 / 1.5, 1, 1, 0.5, 1, 0.5}));
  // The context bounds the window: n_ctx 2 leaves "3 5", 3 in the older half.
  p.n_ctx = 2;
  expect_probs(run(p, logits, {3, 3, 5}), softmax({1, 1, 1, 1 / 1.5, 1, 0.5}));
  // Range 0 is one token (KoboldCpp raises it to 1).
  p.n_ctx = 0;
  p.rep_pen_range = 0;
  expect_probs(run(p, logits, {3, 3, 5}), softmax({1, 1, 1, 1, 1, 0.5}));
}

TEST(KcppSamplers, ImpossibleTokensStayImpossible) {
  // A logit of -inf (a token some filter ruled out) neither turns into NaN nor skews the cuts.
  const std::vector<float> logits = {4, 3, 1, 0, -3, -INFINITY};
  auto p = neutral();
  p.smoothing_factor = 0.5f;
  auto s = softmax({4, 3.5, -0.5, -4.0, -20.5});  // 4 - 0.5 d^2, d = 0 -1 -3 -4 -7
  expect_probs(run(p, logits), {s[0], s[1], s[2], s[3], s[4], 0});
  p = neutral();
  p.nsigma = 1;  // the same cut as without the -inf token: 4 and 3 stay
  expect_probs(run(p, logits), {softmax({4, 3})[0], softmax({4, 3})[1], 0, 0, 0, 0});
  p = neutral();
  p.mirostat = 1;
  p.mirostat_tau = 2;
  Sampler m(p, 6);
  const int t = m.sample(logits.data(), {});
  EXPECT_TRUE(t >= 0 && t <= 4);
  EXPECT_TRUE(std::isfinite(m.mirostat_mu()));
}

TEST(KcppSamplers, ValidationNamesTheField) {
  auto bad = [](auto set) {
    SamplerParams p;
    set(p);
    return sampler_params_error(p, 10);
  };
  EXPECT_NE(bad([](SamplerParams& p) { p.mirostat = 3; }).find("mirostat"), std::string::npos);
  EXPECT_NE(bad([](SamplerParams& p) { p.dry_base = 0; }).find("dry_base"), std::string::npos);
  EXPECT_NE(bad([](SamplerParams& p) { p.dry_breakers = {{10}}; }).find("dry_sequence_breakers"), std::string::npos);
  EXPECT_NE(bad([](SamplerParams& p) { p.xtc_probability = 2; }).find("xtc_probability"), std::string::npos);
  EXPECT_NE(bad([](SamplerParams& p) { p.nsigma = NAN; }).find("nsigma"), std::string::npos);
  EXPECT_NE(bad([](SamplerParams& p) { p.smoothing_factor = -1; }).find("smoothing_factor"), std::string::npos);
  EXPECT_EQ(bad([](SamplerParams&) {}), "");
}

}  // namespace
}  // namespace metharme
