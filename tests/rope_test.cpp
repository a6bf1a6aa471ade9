// RoPE scaling: frequencies of each scheme against hand-computed values and against the torch
// reference of tests/data/rope_reference.json (tools/rope_reference.py), config.json and command
// line handling, and the scaled rotation used consistently by prefill, decode and context shift.
#include "ops/rope.h"

#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "formats/hf_config.h"
#include "model/rope_setup.h"
#include "support/test_util.h"
#include "util/error.h"

namespace metharme {
namespace {

using json = nlohmann::json;

RopeScaling scaling(const json& j) { return parse_rope_scaling(j, "config.json"); }

// head_dim 8, base 10000: inv_freq[j] = 10000^(-j/4) = 1, 0.1, 0.01, 0.001.
TEST(RopeFreqs, PlainByHand) {
  auto f = ops::rope_frequencies(8, 10000, RopeScaling{}, 2048, 2048);
  ASSERT_EQ(f.inv_freq.size(), 4u);
  const float want[] = {1.f, 0.1f, 0.01f, 0.001f};
  for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(f.inv_freq[size_t(j)], want[j]);
  EXPECT_EQ(f.attention_scale, 1.f);
  ops::RopeTable t(f, 16);
  EXPECT_NEAR(t.cos(3)[1], 0.955336489, 1e-7);  // cos(3 * 0.1)
  EXPECT_NEAR(t.sin(3)[1], 0.295520207, 1e-7);
}

TEST(RopeFreqs, LinearByHand) {
  auto f = ops::rope_frequencies(8, 10000, scaling({{"type", "linear"}, {"factor", 4.0}}), 2048, 2048);
  const float want[] = {0.25f, 0.025f, 0.0025f, 0.00025f};  // plain / 4
  for (int j = 0; j < 4; ++j) EXPECT_FLOAT_EQ(f.inv_freq[size_t(j)], want[j]);
  ops::RopeTable t(f, 16);
  EXPECT_NEAR(t.cos(8)[1], 0.980066578, 1e-7);  // cos(8 * 0.025)
}

// Trained 1000, factor 2, cache of 3000: base = 10000 * (2 * 3000/1000 - 1)^(8/6) = 10000 * 5^(4/3),
// so inv_freq[j] = 10000^(-j/4) * 5^(-j/3).
TEST(RopeFreqs, DynamicByHand) {
  const RopeScaling s = scaling({{"rope_type", "dynamic"}, {"factor", 2.0}});
  auto f = ops::rope_frequencies(8, 10000, s, 1000, 3000);
  EXPECT_FLOAT_EQ(f.inv_freq[0], 1.f);
  EXPECT_FLOAT_EQ(f.inv_freq[1], 0.0584803548f);
  EXPECT_FLOAT_EQ(f.inv_freq[2], 0.00341995189f);
  EXPECT_FLOAT_EQ(f.inv_freq[3], 0.0002f);
  // Within the trained context the base is the model's own.
  auto g = ops::rope_frequencies(8, 10000, s, 1000, 800);
  EXPECT_FLOAT_EQ(g.inv_freq[3], 0.001f);
}

// head_dim 8, base 10000, trained 2048, factor 4: the correction dims are
// log10(2048 / (2pi * beta)): 1.008 for beta_fast 32 (floor 1), 2.513 for beta_slow 1 (ceil 3), so
// the ramp (j - 1) / 2 keeps pairs 0-1, blends pair 2 half and half, interpolates pair 3.
TEST(RopeFreqs, YarnByHand) {
  auto f = ops::rope_frequencies(
      8, 10000, scaling({{"rope_type", "yarn"}, {"factor", 4.0}, {"original_max_position_embeddings", 2048}}), 8192,
      8192);
  EXPECT_FLOAT_EQ(f.inv_freq[0], 1.f);
  EXPECT_FLOAT_EQ(f.inv_freq[1], 0.1f);
  EXPECT_FLOAT_EQ(f.inv_freq[2], 0.00625f);  // 0.5 * 0.01 / 4 + 0.5 * 0.01
  EXPECT_FLOAT_EQ(f.inv_freq[3], 0.00025f);
  EXPECT_FLOAT_EQ(f.attention_scale, 1.13862944f);  // 0.1 * ln 4 + 1
  ops::RopeTable t(f, 16);
  EXPECT_NEAR(t.cos(10)[2], 1.136406274, 1e-6);  // cos(10 * 0.00625) * 1.1386
  EXPECT_NEAR(t.sin(10)[2], 0.071118018, 1e-7);
}

// head_dim 8, base 10000, trained 1000, factor 8, low 1, high 4: wavelengths 2pi / inv_freq are
// 6.3, 63, 628 and 6283 against the bounds 1000 / 4 = 250 and 1000 / 1: pairs 0-1 stay, pair 3
// is divided by 8, pair 2 blends with smooth = (1000 / 628.3 - 1) / 3 = 0.19718.
TEST(RopeFreqs, Llama3ByHand) {
  auto f = ops::rope_frequencies(8, 10000,
                                 scaling({{"rope_type", "llama3"},
                                          {"factor", 8.0},
                                          {"low_freq_factor", 1.0},
                                          {"high_freq_factor", 4.0},
                                          {"original_max_position_embeddings", 1000}}),
                                 131072, 4096);
  EXPECT_FLOAT_EQ(f.inv_freq[0], 1.f);
  EXPECT_FLOAT_EQ(f.inv_freq[1], 0.1f);
  EXPECT_FLOAT_EQ(f.inv_freq[2], 0.00297535251f);  // (1 - s) * 0.01 / 8 + s * 0.01
  EXPECT_FLOAT_EQ(f.inv_freq[3], 0.000125f);
  EXPECT_EQ(f.attention_scale, 1.f);
}

// Every case of the torch reference: inv_freq within float32 rounding, the attention factor, and
// cos/sin at a few positions.
TEST(RopeFreqs, MatchTorchReference) {
  const json ref = test::read_json(test::repo("tests/data/rope_reference.json"));
  ASSERT_GE(ref["cases"].size(), 10u);
  for (const json& c : ref["cases"]) {
    SCOPED_TRACE(c["name"].get<std::string>());
    const RopeScaling s = c["rope_scaling"].is_null() ? RopeScaling{} : scaling(c["rope_scaling"]);
    const int hd = c["head_dim"];
    auto f = ops::rope_frequencies(hd, c["rope_theta"], s, c["max_position_embeddings"], c["seq_len"]);
    const auto want = c["inv_freq"].get<std::vector<double>>();
    ASSERT_EQ(f.inv_freq.size(), want.size());
    // float32 frequencies: torch computes in float, we in double rounded once (a few ulps apart).
    for (size_t j = 0; j < want.size(); ++j) EXPECT_NEAR(f.inv_freq[j], want[j], 6e-7 * want[j]) << "pair " << j;
    EXPECT_NEAR(f.attention_scale, c["attention_factor"].get<double>(), 1e-6);
    const auto pos = c["positions"].get<std::vector<int>>();
    ops::RopeTable t(f, pos.back() + 1);
    // The angle inherits those ulps times the position; the stored value its float rounding.
    for (size_t i = 0; i < pos.size(); ++i)
      for (int j = 0; j < hd / 2; ++j) {
        const double tol = 1e-6 + pos[i] * 6e-7 * want[size_t(j)] * f.attention_scale;
        EXPECT_NEAR(t.cos(pos[i])[j], c["cos"][i][size_t(j)].get<double>(), tol) << "pos " << pos[i] << " pair " << j;
        EXPECT_NEAR(t.sin(pos[i])[j], c["sin"][i][size_t(j)].get<double>(), tol) << "pos " << pos[i] << " pair " << j;
      }
  }
}

// A key rotated at p, then turned by delta, equals the key rotated at p + delta, attention scale
// included once (what KvCache::shift relies on).
TEST(RopeFreqs, DeltaRotationKeepsScaledTable) {
  const RopeScaling s = scaling({{"type", "yarn"}, {"factor", 4.0}});
  ops::RopeTable t(ops::rope_frequencies(64, 10000, s, 512, 2048), 2048);
  std::vector<float> a(64), b(64);
  for (int i = 0; i < 64; ++i) a[size_t(i)] = b[size_t(i)] = std::sin(0.37f * float(i)) + 0.1f;
  ops::apply_rope(a.data(), 1, t, 1500);
  ops::apply_rope_delta(a.data(), 1, t, -1200);
  ops::apply_rope(b.data(), 1, t, 300);
  for (int i = 0; i < 64; ++i) EXPECT_NEAR(a[size_t(i)], b[size_t(i)], 2e-5) << i;
}

TEST(RopeConfig, HostileValuesNameTheField) {
  struct Case {
    json r;
    std::string want;
  };
  const std::vector<Case> cases = {
      {json::array(), "'rope_scaling' must be an object"},
      {{{"factor", 2.0}}, "no 'rope_type'"},
      {{{"type", "longrope"}, {"factor", 2.0}}, "type 'longrope' is not supported"},
      {{{"type", "linear"}, {"rope_type", "yarn"}, {"factor", 2.0}}, "two schemes"},
      {{{"type", "linear"}}, "'rope_scaling.factor'"},
      {{{"type", "linear"}, {"factor", -2.0}}, "'rope_scaling.factor' = -2.0 is out of range"},
      {{{"type", "linear"}, {"factor", 1e9}}, "'rope_scaling.factor'"},
      {{{"type", "linear"}, {"factor", "2"}}, "'rope_scaling.factor' must be a number"},
      {{{"type", "linear"}, {"factor", 2.0}, {"beta_fast", 32.0}}, "'rope_scaling.beta_fast' does not apply"},
      {{{"type", "yarn"}, {"factor", 2.0}, {"beta_slow", 0.0}}, "'rope_scaling.beta_slow'"},
      {{{"type", "yarn"}, {"factor", 2.0}, {"attention_factor", 1e6}}, "'rope_scaling.attention_factor'"},
      {{{"type", "yarn"}, {"factor", 2.0}, {"truncate", 1}}, "'rope_scaling.truncate' must be a boolean"},
      {{{"type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", -5}},
       "'original_max_position_embeddings'"},
      {{{"rope_type", "llama3"}, {"factor", 8.0}, {"low_freq_factor", 1.0}, {"high_freq_factor", 4.0}},
       "'original_max_position_embeddings'"},
      {{{"rope_type", "llama3"},
        {"factor", 8.0},
        {"low_freq_factor", 4.0},
        {"high_freq_factor", 4.0},
        {"original_max_position_embeddings", 8192}},
       "high_freq_factor (4) must be above low_freq_factor"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.r.dump());
    try {
      scaling(c.r);
      ADD_FAILURE() << "accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("config.json"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(c.want), std::string::npos) << e.what();
    }
  }
}

TEST(RopeConfig, ParsesEachScheme) {
  EXPECT_EQ(scaling({{"type", "default"}}).kind, RopeKind::kNone);
  const RopeScaling y = scaling({{"type", "yarn"},
                                 {"factor", 16.0},
                                 {"original_max_position_embeddings", 4096},
                                 {"finetuned", true},
                                 {"beta_fast", 16.0},
                                 {"truncate", false}});
  EXPECT_EQ(y.kind, RopeKind::kYarn);
  EXPECT_EQ(y.factor, 16.0);
  EXPECT_EQ(y.original_max_positions, 4096);
  EXPECT_EQ(y.beta_fast, 16.0);
  EXPECT_EQ(y.beta_slow, 1.0);
  EXPECT_FALSE(y.truncate);
  // Through the whole config: null means none, an object is parsed.
  json cfg = {{"hidden_size", 64},      {"intermediate_size", 128}, {"num_attention_heads", 4},
              {"num_hidden_layers", 1}, {"vocab_size", 32},         {"rope_scaling", nullptr}};
  EXPECT_EQ(parse_llama_config(cfg, "c.json").rope_scaling.kind, RopeKind::kNone);
  cfg["rope_scaling"] = {{"type", "dynamic"}, {"factor", 2.0}};
  EXPECT_EQ(parse_llama_config(cfg, "c.json").rope_scaling.kind, RopeKind::kDynamic);
}

LlamaConfig small_config(int trained, double theta = 10000) {
  LlamaConfig c;
  c.head_dim = 8;
  c.max_position_embeddings = trained;
  c.rope_theta = theta;
  return c;
}

// KoboldCpp's automatic base: 10000^(log10(4096 / 2pi) / log10(2048 / 2pi)) = 30138.9 for a
// LLaMA-1 model at 4096, nothing at or below 2048 or the trained context.
TEST(RopeChoice, KoboldAutomaticBase) {
  EXPECT_NEAR(kobold_auto_rope_base(10000, 2048, 4096), 30138.93, 0.05);
  EXPECT_NEAR(kobold_auto_rope_base(10000, 2048, 8192), 90835.48, 0.05);
  EXPECT_EQ(kobold_auto_rope_base(10000, 2048, 2048), 10000);
  EXPECT_EQ(kobold_auto_rope_base(10000, 512, 2048), 10000);  // at most 2048: never
  EXPECT_EQ(kobold_auto_rope_base(10000, 8192, 4096), 10000);

  RopeOverrides o;
  o.auto_ntk = true;
  RopeChoice r = choose_rope(small_config(2048), o, 4096);
  EXPECT_NEAR(r.theta, 30138.93, 0.05);
  EXPECT_EQ(r.scaling.kind, RopeKind::kNone);
  EXPECT_NE(r.summary.find("automatic NTK-aware base 10000 -> 30138.9"), std::string::npos) << r.summary;
  EXPECT_FLOAT_EQ(r.freqs.inv_freq[1], float(std::pow(30138.925, -0.25)));
  // Not without the option, not when the model scales itself or has an unusual base.
  EXPECT_EQ(choose_rope(small_config(2048), RopeOverrides{}, 4096).theta, 10000);
  EXPECT_EQ(choose_rope(small_config(2048, 1e6), o, 4096).theta, 1e6);
  LlamaConfig scaled = small_config(2048);
  scaled.rope_scaling = scaling({{"type", "linear"}, {"factor", 2.0}});
  r = choose_rope(scaled, o, 4096);
  EXPECT_EQ(r.theta, 10000);
  EXPECT_NE(r.summary.find("linear x2"), std::string::npos) << r.summary;
  EXPECT_NE(r.summary.find("from the model"), std::string::npos) << r.summary;
  // Within the trained context nothing is said.
  EXPECT_TRUE(choose_rope(small_config(2048), o, 2048).summary.empty());
}

TEST(RopeChoice, CommandLineOverrides) {
  RopeOverrides o;
  o.auto_ntk = true;
  o.freq_scale = 0.5;  // --rope-freq-scale 0.5: linear x2
  RopeChoice r = choose_rope(small_config(2048), o, 4096);
  EXPECT_EQ(r.scaling.kind, RopeKind::kLinear);
  EXPECT_EQ(r.scaling.factor, 2.0);
  EXPECT_EQ(r.theta, 10000);  // no automatic base once a flag is given
  EXPECT_FLOAT_EQ(r.freqs.inv_freq[1], 0.05f);
  EXPECT_NE(r.summary.find("from the command line"), std::string::npos) << r.summary;
  o = RopeOverrides{};
  o.freq_base = 40000;
  r = choose_rope(small_config(2048), o, 4096);
  EXPECT_EQ(r.theta, 40000);
  EXPECT_EQ(r.scaling.kind, RopeKind::kNone);
  // The factor of the model's own scheme is replaced, the scheme kept.
  LlamaConfig y = small_config(2048);
  y.rope_scaling = scaling({{"type", "yarn"}, {"factor", 4.0}});
  o = RopeOverrides{};
  o.freq_scale = 0.125;
  r = choose_rope(y, o, 8192);
  EXPECT_EQ(r.scaling.kind, RopeKind::kYarn);
  EXPECT_EQ(r.scaling.factor, 8.0);
  // Beyond the trained context with nothing applied: a warning line.
  r = choose_rope(small_config(512), RopeOverrides{}, 1024);
  EXPECT_NE(r.summary.find("warning"), std::string::npos) << r.summary;
}

}  // namespace
}  // namespace metharme
