// The KV cache flags on the command line (cli/runtime_flags.cpp) and `bench --depth`.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/test_util.h"

namespace metharme {
namespace {

using json = nlohmann::json;

const std::string kModel = test::fixture("gptq/gptq-4bit");

TEST(KvCli, BenchAtDepthsWithSeparateKeyAndValueTypes) {
  auto r = test::run_cli({"bench", "-m", kModel, "-p", "8", "-n", "3", "-r", "1", "-t", "1", "--no-probe", "-d",
                          "0,40", "--kv-type-k", "q8", "--kv-type-v", "q4", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  json j = json::parse(r.out);
  EXPECT_EQ(j["kv_type"], "k=q8,v=q4");
  // head_dim 32: one q8 block (34 bytes) and one q4 block (18) per kv head, 8 heads, 4 layers.
  EXPECT_EQ(j["kv_bytes_per_position"], 4 * 8 * (34 + 18));
  ASSERT_EQ(j["depths"].size(), 2u);
  EXPECT_EQ(j["depths"][0]["depth"], 0);
  EXPECT_EQ(j["depths"][1]["depth"], 40);
  for (const auto& d : j["depths"])
    for (const char* t : {"pp", "tg"}) {
      EXPECT_GT(d[t]["tok_s"].get<double>(), 0.0);
      const double share = d[t]["attention_share"].get<double>();
      EXPECT_GT(share, 0.0) << t;
      EXPECT_LT(share, 1.0) << t;
    }
  EXPECT_EQ(j["pp"]["tok_s"], j["depths"][0]["pp"]["tok_s"]) << "the top-level figures are depth 0's";
}

TEST(KvCli, KoboldCppQuantKvAndLlamaCppSpellings) {
  auto r = test::run_cli({"bench", "-m", kModel, "-p", "0", "-n", "1", "-r", "1", "-t", "1", "--no-probe",
                          "--quantkv", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["kv_type"], "q8");
  r = test::run_cli({"bench", "-m", kModel, "-p", "0", "-n", "1", "-r", "1", "-t", "1", "--no-probe", "--quantkv",
                     "2", "--cache-type-k", "q8_0", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out)["kv_type"], "k=q8,v=q4");
}

TEST(KvCli, BadKvFlagsAreRefusedByName) {
  auto r = test::run_cli({"bench", "-m", kModel, "-n", "1", "--no-probe", "--kv-type", "q5"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE((r.out + r.err).find("q5"), std::string::npos) << r.err;
  r = test::run_cli({"bench", "-m", kModel, "-n", "1", "--no-probe", "--quantkv", "3"});
  EXPECT_NE(r.exit_code, 0);
  r = test::run_cli({"bench", "-m", kModel, "-n", "1", "--no-probe", "--quantkv", "1", "--kv-type", "f16"});
  EXPECT_NE(r.exit_code, 0) << "--quantkv and --kv-type together";
}

// One model against itself with another KV type: the q8 cache's perplexity within 0.5% of f32's.
TEST(KvCli, PerplexityComparesKvTypesOfOneModel) {
  const std::string m = test::repo("models/stories260k");
  auto r = test::run_cli({"perplexity", "-m", m, "--kld-base", m, "--kld-base-kv-type", "f32", "--kv-type", "q8",
                          "--data", test::shared("data/tinyshakespeare.txt"), "--protocol", "llamacpp", "--ctx",
                          "128", "--limit", "4", "--no-progress", "-t", "1", "--json"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("stories260k kv f32"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("stories260k kv q8"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace metharme
