// RoPE scaling end to end: stories260k with rope_scaling in its config.json (a copy in a temp
// folder), a scaled context shift against a fresh prefill, and the command-line flags.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "chat/kv_context.h"
#include "formats/gguf.h"
#include "formats/gguf_llama.h"
#include "quant/gguf_export.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "util/error.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// stories260k's files linked into `dir`, with config.json's rope_scaling set to `rs`.
std::string stories_with(const test::TempDir& dir, const json& rs) {
  const std::string src = test::fixture("models/stories260k");
  for (const auto& e : fs::directory_iterator(src))
    if (e.path().filename() != "config.json" && e.is_regular_file())
      fs::create_symlink(fs::absolute(e.path()), fs::path(dir.path()) / e.path().filename());
  json cfg = test::read_json(src + "/config.json");
  cfg["rope_scaling"] = rs;
  std::ofstream(dir / "config.json") << cfg.dump(1);
  return dir.path();
}

std::vector<int> ids(int n, uint32_t seed) {
  std::mt19937 g(seed);
  std::uniform_int_distribution<int> d(3, 511);
  std::vector<int> v{1};
  for (int i = 1; i < n; ++i) v.push_back(d(g));
  return v;
}

TEST(RopeModel, LinearFactorOneEqualsNoScalingExactly) {
  const auto prompt = ids(40, 1);
  auto plain = test::load_model(test::fixture("models/stories260k"), 2, 64);
  const auto want = test::all_logits(*plain.rt, prompt);
  test::TempDir d1, d2;
  auto one = test::load_model(stories_with(d1, {{"type", "linear"}, {"factor", 1.0}}), 2, 64);
  EXPECT_EQ(one.weights->config.rope_scaling.kind, RopeKind::kLinear);
  const auto got = test::all_logits(*one.rt, prompt);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
  // A real factor changes every position after the first.
  auto two = test::load_model(stories_with(d2, {{"type", "linear"}, {"factor", 2.0}}), 2, 64);
  const auto scaled = test::all_logits(*two.rt, prompt);
  const size_t V = 512;
  EXPECT_EQ(test::max_abs_diff(scaled.data(), want.data(), V), 0.f);  // position 0 turns by nothing
  EXPECT_GT(test::max_abs_diff(scaled.data() + 10 * V, want.data() + 10 * V, V), 1e-3f);
}

// Each scheme from config.json runs a sequence twice the trained 512 positions, batched prefill
// and token-by-token decode agreeing (both read the one scaled table).
TEST(RopeModel, EverySchemeRunsBeyondTheTrainedContext) {
  const json schemes[] = {
      {{"type", "linear"}, {"factor", 2.0}},
      {{"type", "dynamic"}, {"factor", 2.0}},
      {{"rope_type", "yarn"}, {"factor", 2.0}, {"original_max_position_embeddings", 512}},
      {{"rope_type", "llama3"},
       {"factor", 2.0},
       {"low_freq_factor", 1.0},
       {"high_freq_factor", 4.0},
       {"original_max_position_embeddings", 512}},
  };
  const auto seq = ids(1024, 2);
  for (const json& rs : schemes) {
    SCOPED_TRACE(rs.dump());
    test::TempDir d;
    auto m = test::load_model(stories_with(d, rs), 2, 1024);
    EXPECT_NE(m.rt->rope_choice().summary.find("from the model"), std::string::npos);
    const auto batched = test::all_logits(*m.rt, seq);
    const auto stepped = test::all_logits_incremental(*m.rt, seq, 0);
    for (float x : batched) ASSERT_TRUE(std::isfinite(x));
    const size_t V = 512, last = (seq.size() - 1) * V;
    EXPECT_LE(test::max_abs_diff(batched.data() + last, stepped.data() + last, V), 2e-3f);
  }
}

// With one layer, a context shift under YaRN (scaled frequencies and an attention factor) must
// give what a fresh prefill of the shorter context gives: KvCache::shift uses the runtime's table.
TEST(RopeModel, ScaledContextShiftEqualsFreshPrefill) {
  test::TempDir d;
  LoadOptions lo;
  lo.quiet = true;
  auto w = load_weights(stories_with(d, {{"type", "yarn"}, {"factor", 4.0}}), lo);
  w->layers.resize(1);
  w->config.num_hidden_layers = 1;
  RuntimeOptions ro;
  ro.n_threads = 2;
  ro.n_ctx = 1500;
  ro.n_seq = 2;
  LlamaRuntime rt(*w, ro);
  ASSERT_GT(rt.rope().freqs().attention_scale, 1.1f);
  auto H = ids(12, 3), D = ids(400, 4), K = ids(300, 5), N = ids(6, 6);
  D.erase(D.begin()), K.erase(K.begin()), N.erase(N.begin());  // only H starts with BOS
  auto join = [](std::initializer_list<std::vector<int>> parts) {
    std::vector<int> v;
    for (const auto& p : parts) v.insert(v.end(), p.begin(), p.end());
    return v;
  };
  KvContext shifted(rt, 0);
  shifted.sync(join({H, D, K}));
  const float* l = shifted.sync(join({H, K, N}));
  ASSERT_EQ(shifted.last_plan().shifted, int(K.size()));
  std::vector<float> got(l, l + rt.n_vocab());
  KvContext fresh(rt, 1);
  const float* r = fresh.sync(join({H, K, N}));
  EXPECT_LE(test::max_abs_diff(got.data(), r, size_t(rt.n_vocab())), 1e-4f);
}

// A metadata-only GGUF (no tensors): enough for gguf_llama_config.
std::string gguf_meta(const test::TempDir& d, const std::function<void(GgufWriter&)>& extra) {
  const std::string path = d / "m.gguf";
  GgufWriter w(path);
  w.set_str("general.architecture", "llama");
  w.set_u32("llama.context_length", 4096);
  w.set_u32("llama.embedding_length", 64);
  w.set_u32("llama.block_count", 1);
  w.set_u32("llama.feed_forward_length", 128);
  w.set_u32("llama.attention.head_count", 8);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
  w.set_u32("llama.vocab_size", 32);
  extra(w);
  w.commit();
  return path;
}

TEST(RopeGguf, ScalingKeys) {
  test::TempDir d;
  auto cfg = [&](const std::function<void(GgufWriter&)>& f) { return gguf_llama_config(GgufFile(gguf_meta(d, f))); };
  EXPECT_EQ(cfg([](GgufWriter&) {}).rope_scaling.kind, RopeKind::kNone);
  LlamaConfig c = cfg([](GgufWriter& w) {
    w.set_str("llama.rope.scaling.type", "linear");
    w.set_f32("llama.rope.scaling.factor", 4);
  });
  EXPECT_EQ(c.rope_scaling.kind, RopeKind::kLinear);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  // The older key, no type: linear, as llama.cpp reads it.
  c = cfg([](GgufWriter& w) { w.set_f32("llama.rope.scale_linear", 2); });
  EXPECT_EQ(c.rope_scaling.kind, RopeKind::kLinear);
  EXPECT_EQ(c.rope_scaling.factor, 2.0);
  c = cfg([](GgufWriter& w) {
    w.set_str("llama.rope.scaling.type", "yarn");
    w.set_f32("llama.rope.scaling.factor", 8);
    w.set_u32("llama.rope.scaling.original_context_length", 512);
    w.set_f32("llama.rope.scaling.yarn_beta_fast", 16);
    w.set_f32("llama.rope.freq_base", 20000);
  });
  EXPECT_EQ(c.rope_scaling.kind, RopeKind::kYarn);
  EXPECT_EQ(c.rope_scaling.factor, 8.0);
  EXPECT_EQ(c.rope_scaling.original_max_positions, 512);
  EXPECT_EQ(c.rope_scaling.beta_fast, 16.0);
  EXPECT_EQ(c.rope_scaling.beta_slow, 1.0);
  EXPECT_EQ(c.rope_theta, 20000.0);

  const std::vector<std::pair<std::function<void(GgufWriter&)>, std::string>> bad = {
      {[](GgufWriter& w) { w.set_str("llama.rope.scaling.type", "longrope"); }, "'longrope' is not supported"},
      {[](GgufWriter& w) { w.set_f32("llama.rope.scaling.factor", -3); }, "'llama.rope.scaling.factor' = -3"},
      {[](GgufWriter& w) { w.set_f32("llama.rope.scaling.factor", 1e9f); }, "'llama.rope.scaling.factor'"},
      {[](GgufWriter& w) {
         w.set_str("llama.rope.scaling.type", "yarn");
         w.set_f32("llama.rope.scaling.yarn_beta_slow", 0);
       },
       "'llama.rope.scaling.yarn_beta_slow' = 0"},
      {[](GgufWriter& w) { w.set_f32("llama.rope.scaling.yarn_log_multiplier", 0.1f); }, "yarn_log_multiplier"},
      {[](GgufWriter& w) { w.set_u32("llama.rope.scaling.original_context_length", 0); }, "original_context_length"},
  };
  for (const auto& [f, want] : bad) {
    try {
      cfg(f);
      ADD_FAILURE() << "accepted: " << want;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("m.gguf"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  }
}

// A YaRN folder exported to GGUF keeps its scaling, and both give the same logits.
TEST(RopeGguf, ExportKeepsScaling) {
  test::TempDir d, out;
  const std::string src = stories_with(d, {{"type", "yarn"}, {"factor", 4.0}, {"beta_fast", 24.0}});
  GgufExportOptions o;
  o.type = "f32";
  o.quiet = true;
  export_gguf(src, out / "y.gguf", o);
  const LlamaConfig c = load_llama_config(out / "y.gguf");
  EXPECT_EQ(c.rope_scaling.kind, RopeKind::kYarn);
  EXPECT_EQ(c.rope_scaling.factor, 4.0);
  EXPECT_EQ(c.rope_scaling.beta_fast, 24.0);
  EXPECT_EQ(c.rope_scaling.original_max_positions, 512);
  auto a = test::load_model(src, 2, 700), b = test::load_model(out / "y.gguf", 2, 700);
  const auto seq = ids(600, 9);
  const auto la = test::all_logits(*a.rt, seq), lb = test::all_logits(*b.rt, seq);
  EXPECT_LE(test::max_abs_diff(la.data(), lb.data(), la.size()), 1e-4f);
  // Dynamic and llama3 have no GGUF keys: refused, not exported unscaled.
  test::TempDir d2;
  const std::string dyn = stories_with(d2, {{"type", "dynamic"}, {"factor", 2.0}});
  EXPECT_THROW(export_gguf(dyn, out / "d.gguf", o), Error);
}

std::vector<std::string> gen(std::vector<std::string> extra) {
  std::vector<std::string> a = {
      "generate",  "-m", test::fixture("models/stories260k"), "-p", "Once upon a time", "-n", "24", "--temp", "0",
      "--threads", "2"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(RopeCli, ContextSizeBeyondTrainedPicksKoboldBaseAndSaysSo) {
  // Trained 512, asked 4096: 10000^(log10(4096 / 2pi) / log10(512 / 2pi)) = 776621.
  auto r = test::run_cli(gen({"--contextsize", "4096"}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("rope: base 776621, no position scaling, automatic NTK-aware base 10000 -> 776621"),
            std::string::npos)
      << r.err;
  size_t lines = 0;
  for (size_t p = r.err.find("rope:"); p != std::string::npos; p = r.err.find("rope:", p + 1)) ++lines;
  EXPECT_EQ(lines, 1u);
  // The same base given by hand gives the same text.
  auto h = test::run_cli(gen({"--contextsize", "4096", "--rope-freq-base", "776621.0066"}));
  ASSERT_EQ(h.exit_code, 0) << h.err;
  EXPECT_EQ(h.out, r.out);
}

TEST(RopeCli, FlagsAndKoboldSpelling) {
  auto plain = test::run_cli(gen({}));
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.err.find("rope:"), std::string::npos) << plain.err;
  auto one = test::run_cli(gen({"--rope-freq-scale", "1"}));
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, plain.out);  // linear x1 is no scaling
  auto k = test::run_cli(gen({"--ropeconfig", "0.5", "20000"}));
  ASSERT_EQ(k.exit_code, 0) << k.err;
  EXPECT_NE(k.err.find("rope: linear x2, base 20000, from the command line"), std::string::npos) << k.err;
  auto s = test::run_cli(gen({"--rope-freq-scale", "0.5", "--rope-freq-base", "20000"}));
  EXPECT_EQ(s.out, k.out);
  auto bad = test::run_cli(gen({"--ropeconfig", "0.5", "--rope-freq-base", "20000"}));
  EXPECT_NE(bad.exit_code, 0);
  auto range = test::run_cli(gen({"--rope-freq-scale", "0"}));
  EXPECT_NE(range.exit_code, 0);
}

}  // namespace
}  // namespace metharme
