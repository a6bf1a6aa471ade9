// metharme convert: any loadable folder -> safetensors, with the same tensors and logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "formats/convert.h"
#include "formats/safetensors.h"
#include "formats/tensor_store.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "support/torch_writer.h"
#include "util/half.h"

namespace metharme {
namespace {

namespace fs = std::filesystem;

std::vector<int> prompt_ids() {
  // BOS and ids below 512, so that both the stories260k and the 32000-token models accept them.
  return {1, 403, 407, 261, 378, 31, 400, 349, 261, 437, 290, 1, 403, 407, 261, 378};
}

std::vector<float> logits(const std::string& dir, const std::vector<int>& ids) {
  auto m = test::load_model(dir);
  return test::all_logits(*m.rt, ids);
}

ConvertOptions quiet() {
  ConvertOptions o;
  o.progress = false;
  return o;
}

TEST(Convert, TorchZipRoundTripsToIdenticalTensorsAndLogits) {
  test::TempDir tmp;
  const std::string out = tmp / "st";
  ConvertResult r = convert_to_safetensors(test::fixture("torch/stories260k-zip"), out, quiet());
  EXPECT_EQ(r.tensors, 48u);
  EXPECT_EQ(r.shards, 1u);
  EXPECT_EQ(r.converted, 0u);
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  EXPECT_FALSE(fs::exists(out + "/model.safetensors.index.json"));
  for (const char* f : {"config.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json"})
    EXPECT_EQ(test::read_bytes(out + "/" + f), test::read_bytes(test::fixture(std::string("torch/stories260k-zip/") + f))) << f;
  EXPECT_FALSE(fs::exists(out + "/pytorch_model.bin"));
  const std::string ref = test::fixture("models/stories260k");
  test::expect_same_tensors(TensorStore::open_folder(out), TensorStore::open_folder(ref));
  SafetensorsFile st(out + "/model.safetensors");
  EXPECT_EQ(st.metadata().at("format"), "pt");
  auto ids = prompt_ids();
  auto a = logits(out, ids), b = logits(ref, ids);
  EXPECT_EQ(test::max_abs_diff(a.data(), b.data(), a.size()), 0.0f);
}

TEST(Convert, ShardsWithAnIndexAndRoundTripsTheLegacyLayout) {
  test::TempDir tmp;
  const std::string out = tmp / "sharded";
  ConvertOptions o = quiet();
  o.max_shard_bytes = 200'000;  // the model has ~1.2 MB of tensors
  ConvertResult r = convert_to_safetensors(test::fixture("torch/stories260k-legacy"), out, o);
  ASSERT_GE(r.shards, 5u);
  auto idx = test::read_json(out + "/model.safetensors.index.json");
  EXPECT_EQ(idx["metadata"]["total_size"].get<uint64_t>(), r.bytes);
  EXPECT_EQ(idx["weight_map"].size(), 48u);
  uint64_t sum = 0;
  for (size_t s = 1; s <= r.shards; ++s) {
    char name[64];
    std::snprintf(name, sizeof name, "/model-%05zu-of-%05zu.safetensors", s, r.shards);
    SafetensorsFile f(out + name);
    uint64_t bytes = 0;
    for (const auto& t : f.tensors()) {
      bytes += t.nbytes;
      EXPECT_EQ(idx["weight_map"][t.name].get<std::string>(), std::string(name + 1));
    }
    EXPECT_TRUE(bytes <= o.max_shard_bytes || f.tensors().size() == 1) << name;
    sum += bytes;
  }
  EXPECT_EQ(sum, r.bytes);
  const std::string ref = test::fixture("models/stories260k");
  test::expect_same_tensors(TensorStore::open_folder(out), TensorStore::open_folder(ref));
  auto ids = prompt_ids();
  auto a = logits(out, ids), b = logits(ref, ids);
  EXPECT_EQ(test::max_abs_diff(a.data(), b.data(), a.size()), 0.0f);
}

TEST(Convert, DtypeConversionRoundsEveryFloatAndUpdatesConfig) {
  test::TempDir tmp;
  const std::string ref = test::fixture("models/stories260k");
  TensorStore src = TensorStore::open_folder(ref);
  for (DType to : {DType::F16, DType::BF16}) {
    const std::string out = tmp / (to == DType::F16 ? "f16" : "bf16");
    ConvertOptions o = quiet();
    o.dtype = to;
    ConvertResult r = convert_to_safetensors(test::fixture("torch/stories260k-sharded"), out, o);
    EXPECT_EQ(r.converted, 48u);
    TensorStore got = TensorStore::open_folder(out);
    ASSERT_EQ(got.names(), src.names());
    for (const auto& n : src.names()) {
      const TensorView& a = got.get(n);
      ASSERT_EQ(a.dtype, to) << n;
      auto want = tensor_to_f32(src.get(n));
      const uint16_t* h = a.as<uint16_t>();
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_EQ(h[i], to == DType::F16 ? f32_to_fp16(want[i]) : f32_to_bf16(want[i])) << n << "[" << i << "]";
    }
    EXPECT_EQ(test::read_json(out + "/config.json")["torch_dtype"], to == DType::F16 ? "float16" : "bfloat16");
    // Rounded weights still give nearly the same logits (stories260k logits are O(10)).
    auto ids = prompt_ids();
    auto a = logits(out, ids), b = logits(ref, ids);
    EXPECT_LT(test::max_abs_diff(a.data(), b.data(), a.size()), to == DType::F16 ? 0.05f : 0.5f);
    EXPECT_GT(test::max_abs_diff(a.data(), b.data(), a.size()), 0.0f);
  }
  // f16 -> f32 is exact: the random fp16 model converted up gives identical logits.
  const std::string h256 = test::fixture("models/llama-rand-h256-gqa");
  ConvertOptions o = quiet();
  o.dtype = DType::F32;
  convert_to_safetensors(h256, tmp / "f32", o);
  auto ids = prompt_ids();
  auto a = logits(tmp / "f32", ids), b = logits(h256, ids);
  EXPECT_LT(test::max_abs_diff(a.data(), b.data(), a.size()), 1e-5f);
}

TEST(Convert, GptqPtBecomesTheSafetensorsCheckpointWithScalesKept) {
  test::TempDir tmp;
  ConvertOptions o = quiet();
  o.dtype = DType::BF16;  // GPTQ tensors keep their types; fp16 norms/embedding become bf16
  convert_to_safetensors(test::fixture("torch/gptq-4bit-actorder-g32-pt"), tmp / "q", o);
  TensorStore got = TensorStore::open_folder(tmp / "q");
  TensorStore want = TensorStore::open_folder(test::fixture("gptq/gptq-4bit-actorder-g32"));
  ASSERT_EQ(got.names(), want.names());
  int kept = 0;
  for (const auto& n : want.names()) {
    const TensorView& a = got.get(n);
    const TensorView& b = want.get(n);
    if (n.ends_with(".qweight") || n.ends_with(".qzeros") || n.ends_with(".scales") || n.ends_with(".g_idx")) {
      EXPECT_EQ(a.dtype, b.dtype) << n;
      ASSERT_EQ(a.nbytes, b.nbytes) << n;
      EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << n;
      ++kept;
    } else if (dtype_is_float(b.dtype)) {
      EXPECT_EQ(a.dtype, DType::BF16) << n;
    }
  }
  EXPECT_EQ(kept, 4 * 7 * 4);  // 4 layers x 7 linears x 4 tensors
  // Without --dtype the conversion is byte-exact.
  convert_to_safetensors(test::fixture("torch/gptq-4bit-actorder-g32-pt"), tmp / "q2", quiet());
  test::expect_same_tensors(TensorStore::open_folder(tmp / "q2"), want);
  EXPECT_EQ(test::read_bytes(tmp / "q2/quantize_config.json"),
            test::read_bytes(test::fixture("torch/gptq-4bit-actorder-g32-pt/quantize_config.json")));
}

TEST(Convert, NeverOverwritesWithoutForceNorDestroysItsInput) {
  test::TempDir tmp;
  const std::string out = tmp / "out";
  fs::create_directory(out);
  test::write_bytes(out + "/keep.txt", "precious");
  auto r = test::run_cli({"convert", "-q", "-m", test::fixture("torch/stories260k-zip"), "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("already exists; pass --force"), std::string::npos) << r.err;
  EXPECT_EQ(test::read_bytes(out + "/keep.txt"), "precious");

  r = test::run_cli({"convert", "-q", "--force", "--dtype", "f16", "-m", test::fixture("torch/stories260k-zip"), "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("48 tensors in 1 shard"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("48 tensors converted to f16"), std::string::npos) << r.out;
  EXPECT_FALSE(fs::exists(out + "/keep.txt"));
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));
  for (const auto& e : fs::directory_iterator(tmp.path())) EXPECT_EQ(e.path().filename().string(), "out") << "leftover staging folder";

  // Converting a folder into itself (or into a folder inside it) is refused, even with --force.
  r = test::run_cli({"convert", "-q", "--force", "-m", out, "-o", out});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("must not be, contain or lie inside the input folder"), std::string::npos) << r.err;
  r = test::run_cli({"convert", "-q", "-m", out, "-o", out + "/sub"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(fs::exists(out + "/model.safetensors"));

  r = test::run_cli({"convert", "-m", out, "-o", tmp / "x", "--shard-size", "lots"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--shard-size: cannot read 'lots'"), std::string::npos) << r.err;
  r = test::run_cli({"convert", "-m", tmp / "nope", "-o", tmp / "x"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("model folder does not exist"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "x"));
}

TEST(Convert, FailedConversionLeavesNoOutput) {
  test::TempDir tmp;
  const std::string in = tmp / "in";
  fs::create_directory(in);
  // Two files hold the same tensor name: reading fails, and nothing may appear at the output.
  const std::string pkl = test::state_dict_pickle({{"w", "FloatStorage", "0", 2, 0, {2}, {}}});
  test::write_bytes(in + "/a.bin", test::torch_zip(pkl, {{"0", test::floats_bytes({1, 2})}}));
  test::write_bytes(in + "/b.bin", test::torch_zip(pkl, {{"0", test::floats_bytes({3, 4})}}));
  auto r = test::run_cli({"convert", "-q", "-m", in, "-o", tmp / "out"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("tensor 'w' appears twice"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(tmp / "out"));
}

TEST(Convert, NaturalOrder) {
  std::vector<std::string> v = {"model.layers.10.w", "model.layers.2.w", "lm_head.weight", "model.layers.1.w",
                                "model.embed_tokens.weight", "model.layers.02.x"};
  std::sort(v.begin(), v.end(), natural_less);
  EXPECT_EQ(v, (std::vector<std::string>{"lm_head.weight", "model.embed_tokens.weight", "model.layers.1.w",
                                         "model.layers.2.w", "model.layers.02.x", "model.layers.10.w"}));
}

}  // namespace
}  // namespace metharme
