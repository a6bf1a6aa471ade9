// metharme convert --to gguf: 16-bit and GPTQ fixture folders to GGUF, loaded back and compared
// with the source model (logits, KL-divergence), plus the tokenizer and metadata written.
#include "quant/gguf_export.h"

#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "formats/ggml_quants.h"
#include "formats/gguf_reader.h"
#include "ops/q4_linear.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme {
namespace {

struct ActF32 {
  ActF32() { ops::set_q4_act(ops::Q4Act::kF32); }
  ~ActF32() { ops::set_q4_act(ops::Q4Act::kAuto); }
};

GgufExportReport export_to(const std::string& src, const std::string& out, const std::string& type) {
  GgufExportOptions o;
  o.type = type;
  o.quiet = true;
  return export_gguf(src, out, o);
}

// The first 64 ids of the WikiText windows (BOS first).
std::vector<int> sample_ids() {
  std::vector<int32_t> all = test::wikitext_window_ids();
  return std::vector<int>(all.begin(), all.begin() + 64);
}

// Mean KL(source || gguf) per position and the largest logit difference.
std::pair<double, float> compare(const std::string& src, const std::string& gguf) {
  test::Loaded a = test::load_model(src), b = test::load_model(gguf);
  const std::vector<int> ids = sample_ids();
  const std::vector<float> la = test::all_logits(*a.rt, ids), lb = test::all_logits(*b.rt, ids);
  const size_t V = size_t(a.rt->n_vocab());
  double kl = 0;
  for (size_t t = 0; t < ids.size(); ++t)
    kl += test::reference_kl(std::vector<float>(la.begin() + long(t * V), la.begin() + long((t + 1) * V)),
                             std::vector<float>(lb.begin() + long(t * V), lb.begin() + long((t + 1) * V)));
  return {kl / double(ids.size()), test::max_abs_diff(la.data(), lb.data(), la.size())};
}

// A 16-bit folder exported as F32/F16 (values unchanged, Q/K rows permuted on the way out and
// back on load) gives the source's logits to fp32 rounding: this checks the permutation pair
// on a model whose attention depends on RoPE.
TEST(GgufExport, SixteenBitRoundTripsExactly) {
  ActF32 act;
  test::TempDir dir;
  for (const char* model : {"models/llama-rand-h256", "models/llama-rand-h256-gqa"}) {
    for (const char* type : {"f32", "f16"}) {
      const std::string out = dir / (std::string(type) + ".gguf");
      GgufExportReport r = export_to(test::fixture(model), out, type);
      for (const auto& t : r.tensors) EXPECT_TRUE(t.exact) << t.name;
      auto [kl, diff] = compare(test::fixture(model), out);
      EXPECT_LT(diff, 1e-4f) << model << " " << type;
      EXPECT_LT(kl, 1e-9) << model << " " << type;
    }
  }
}

TEST(GgufExport, MetadataAndTokenizer) {
  ActF32 act;
  test::TempDir dir;
  const std::string out = dir / "m.gguf";
  // ffn_down's 688 inputs are no whole number of Q8_0 blocks: that tensor stays F16.
  GgufExportReport r = export_to(test::fixture("models/llama-rand-h256-gqa"), out, "q8_0");
  for (const auto& t : r.tensors)
    EXPECT_EQ(t.type, t.name.find("norm") != std::string::npos       ? "F32"
                      : t.name.find("ffn_down") != std::string::npos ? "F16"
                                                                     : "Q8_0")
        << t.name;
  GgufFile f(out);
  EXPECT_EQ(f.get_str("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.attention.head_count"), 8u);
  EXPECT_EQ(f.get_uint("llama.attention.head_count_kv"), 2u);
  EXPECT_EQ(f.get_uint("llama.feed_forward_length"), 688u);
  EXPECT_EQ(f.get_uint("llama.rope.dimension_count"), 32u);
  EXPECT_EQ(f.get_uint("general.file_type"), 7u);
  EXPECT_FLOAT_EQ(float(f.get_float("llama.attention.layer_norm_rms_epsilon", 0)), 1e-6f);
  EXPECT_EQ(f.tensor("blk.1.attn_k.weight").type, GgmlType::kQ8_0);
  EXPECT_EQ(f.tensor("blk.1.attn_norm.weight").type, GgmlType::kF32);
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);  // tied embedding
  Tokenizer ref(test::fixture("tokenizer/llama/tokenizer.model"));
  Tokenizer tok = Tokenizer::from_folder(out);
  for (const char* text : {"Hello world", "  two  spaces\nand a line", "emoji 🦙 and 日本語", "<s> is text here"})
    EXPECT_EQ(tok.encode(text, true), ref.encode(text, true)) << text;
  // Q8_0 of fp16 weights: within half a step of each block's scale.
  auto [kl, diff] = compare(test::fixture("models/llama-rand-h256-gqa"), out);
  EXPECT_LT(kl, 1e-3);
}

// GPTQ checkpoints whose groups are contiguous keep every 4-bit code (Q4_1 blocks with d = s,
// m = fp16(-s*z)); the only error is m's fp16 rounding. Target: KL under 1e-4 nats.
TEST(GgufExport, GptqContiguousGroupsKeepCodes) {
  ActF32 act;
  test::TempDir dir;
  for (const char* model : {"gptq/gptq-4bit", "gptq/gptq-4bit-g32", "gptq/gptq-4bit-actorder"}) {
    const std::string out = dir / "q.gguf";
    GgufExportReport r = export_to(test::fixture(model), out, "auto");
    double worst = 0;
    for (const auto& t : r.tensors) {
      if (t.name.find("blk.") == 0 && t.name.find("norm") == std::string::npos) {
        EXPECT_EQ(t.type, "Q4_1") << t.name;
        EXPECT_TRUE(t.codes_kept) << t.name;
      }
      worst = std::max(worst, t.max_err);
    }
    EXPECT_LT(worst, 2e-3) << model;  // |m| <= 15 s: fp16 rounding of m is at most 15 s * 2^-11
    auto [kl, diff] = compare(test::fixture(model), out);
    std::printf("%s -> Q4_1: largest weight error %.3g, mean KL %.3g nats, max logit diff %.3g\n", model, worst, kl,
                double(diff));
    EXPECT_LT(kl, 1e-4) << model;
  }
}

// Act-order with groups of 32 scatters a group's rows: a Q4_1 block would mix groups, so auto
// writes Q8_0 of the exact GPTQ weights. The KL it adds is measured here.
TEST(GgufExport, GptqScatteredGroupsFallBackToQ8_0) {
  ActF32 act;
  test::TempDir dir;
  const std::string model = test::fixture("gptq/gptq-4bit-actorder-g32");
  const std::string out = dir / "q.gguf";
  GgufExportReport r = export_to(model, out, "auto");
  int q8 = 0;
  for (const auto& t : r.tensors)
    if (t.type == "Q8_0") {
      ++q8;
      EXPECT_FALSE(t.codes_kept);
    }
  EXPECT_GT(q8, 0);
  auto [kl, diff] = compare(model, out);
  std::printf("act-order g32 -> Q8_0: mean KL %.3g nats, max logit diff %.3g\n", kl, double(diff));
  EXPECT_LT(kl, 1e-3);
  // q4_1 forces requantization of those tensors: much larger error, still a valid model.
  export_to(model, dir / "q41.gguf", "q4_1");
  auto [kl41, diff41] = compare(model, dir / "q41.gguf");
  std::printf("act-order g32 -> Q4_1 requantized: mean KL %.3g nats\n", kl41);
  EXPECT_GT(kl41, kl);
}

TEST(GgufExport, RefusesUnknownTypes) {
  test::TempDir dir;
  EXPECT_THROW(export_to(test::fixture("gptq/gptq-4bit"), dir / "x.gguf", "q5_k"), Error);
  EXPECT_THROW(export_to(test::fixture("gptq/gptq-4bit"), dir / "x.gguf", "q3"), Error);
}

// --type q4_k / q4_k_m: GPTQ linears become Q4_K with each group's scale and s*z as the sub-block
// scale and min (rounded to Q4_K's 6-bit grids, then the codes to nearest), 16-bit linears Q4_K by
// min/max; the output Q6_K, the embedding Q4_K (Q6_K when tied); q4_k_m also gives attn_v and ffn_down Q6_K in
// llama-quantize's use_more_bits layers. Read back by our reader and run; the KL it adds is printed.
TEST(GgufExport, Q4KTypesReadBack) {
  ActF32 act;
  test::TempDir dir;
  struct Case {
    const char* model;
    const char* type;
    double max_kl;
  };
  for (const Case& k : {Case{"gptq/gptq-4bit-g32", "q4_k", 5e-3}, Case{"gptq/gptq-4bit", "q4_k_m", 5e-3},
                        Case{"models/llama-rand-h256", "q4_k_m", 5e-2}}) {
    const std::string out = dir / "k.gguf";
    std::filesystem::remove(out);
    GgufExportReport r = export_to(test::fixture(k.model), out, k.type);
    GgufFile f(out);
    EXPECT_EQ(f.get_uint("general.file_type"), std::string(k.type) == "q4_k_m" ? 15u : 14u);
    const int n_layers = int(f.get_uint("llama.block_count"));
    int six = 0;
    for (const auto& t : r.tensors) {
      const GgufTensorInfo& ti = f.tensor(t.name);
      EXPECT_EQ(ggml_type_name(uint32_t(ti.type)), t.type) << t.name;
      if (t.name.find("norm") != std::string::npos) continue;
      const bool v_or_down = t.name.find("attn_v") != std::string::npos || t.name.find("ffn_down") != std::string::npos;
      if (ti.dims[0] % 256) {
        EXPECT_TRUE(t.type == "Q8_0" || t.type == "F16") << t.name;  // rows of partial super-blocks
      } else if (t.name == "output.weight" || (t.name == "token_embd.weight" && !f.find_tensor("output.weight")) ||
                 (std::string(k.type) == "q4_k_m" && v_or_down && t.type == "Q6_K")) {
        EXPECT_EQ(t.type, "Q6_K") << t.name;
        six += v_or_down;
      } else {
        EXPECT_EQ(t.type, "Q4_K") << t.name;
      }
    }
    // use_more_bits for 4 (2) layers: layers 2, 3 (1); attn_v (K = 256) always qualifies.
    if (std::string(k.type) == "q4_k_m") {
      EXPECT_GE(six, n_layers == 4 ? 2 : 1) << k.model;
    }
    auto [kl, diff] = compare(test::fixture(k.model), out);
    double worst = 0;
    for (const auto& t : r.tensors) worst = std::max(worst, t.max_err);
    std::printf("%s -> %s: largest weight error %.3g, mean KL %.3g nats, max logit diff %.3g\n", k.model, k.type, worst,
                kl, double(diff));
    EXPECT_LT(kl, k.max_kl) << k.model << " " << k.type;
  }
}

// The Q4_K and Q6_K quantizers on fresh random rows: every value within half a step of its
// sub-block's (rounded) scale plus the scale's own 6- / 8-bit rounding.
TEST(GgufExport, KQuantizersRoundTrip) {
  std::mt19937 rng(11);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  std::vector<float> x(256 * 5), back(x.size());
  for (float& v : x) v = nd(rng);
  x[7] = 0.2f;  // an outlier in one sub-block
  for (GgmlType t : {GgmlType::kQ4_K, GgmlType::kQ6_K}) {
    std::vector<uint8_t> b(ggml_tensor_bytes(t, {int64_t(x.size())}));
    ggml_quantize(t, x.data(), int64_t(x.size()), b.data());
    ggml_dequantize(t, b.data(), int64_t(x.size()), back.data());
    double worst = 0, sum = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      const double e = std::fabs(double(back[i]) - x[i]);
      worst = std::max(worst, e);
      sum += e;
    }
    // Q4_K: 16 levels over a sub-block's range (about 0.15, 0.35 with the outlier); Q6_K: 64.
    EXPECT_LT(worst, t == GgmlType::kQ4_K ? 0.02 : 0.004) << ggml_type_name(uint32_t(t));
    EXPECT_LT(sum / double(x.size()), t == GgmlType::kQ4_K ? 0.004 : 0.0006) << ggml_type_name(uint32_t(t));
  }
}

TEST(GgufCli, ConvertThenPerplexityAndGenerate) {
  test::TempDir dir;
  const std::string out = dir / "m.gguf";
  auto c = test::run_cli({"convert", "-m", test::fixture("gptq/gptq-4bit-g32"), "--to", "gguf", "-o", out});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.out.find("blk.0.attn_q.weight"), std::string::npos) << c.out;
  EXPECT_NE(c.out.find("codes kept"), std::string::npos) << c.out;
  auto again = test::run_cli({"convert", "-m", test::fixture("gptq/gptq-4bit-g32"), "--to", "gguf", "-o", out});
  EXPECT_NE(again.exit_code, 0);  // exists, no --force
  auto g = test::run_cli({"generate", "-m", out, "-p", "Hello", "-n", "4", "--temp", "0"});
  EXPECT_EQ(g.exit_code, 0) << g.err;
}

}  // namespace
}  // namespace metharme
