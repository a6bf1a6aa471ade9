// metharme convert --to gguf: 16-bit and GPTQ fixture folders to GGUF, loaded back and compared
// with the source model (logits, KL-divergence), plus the tokenizer and metadata written.
#include "quant/gguf_export.h"

#include <gtest/gtest.h>

#include <cmath>

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
  EXPECT_THROW(export_to(test::fixture("gptq/gptq-4bit"), dir / "x.gguf", "q4_k"), Error);
  EXPECT_THROW(export_to(test::fixture("gptq/gptq-4bit"), dir / "x.gguf", "q3"), Error);
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
