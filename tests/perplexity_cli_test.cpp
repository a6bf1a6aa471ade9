// `metharme perplexity` end to end: results tables (text and JSON), several models and datasets,
// KL-divergence against a base, and one-line errors for bad input.
#include <gtest/gtest.h>

#include <fstream>

#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme {
namespace {

const std::string kH256 = test::fixture("models/llama-rand-h256");
const std::string kGqa = test::fixture("models/llama-rand-h256-gqa");

// The first 4 x 128 wikitext ids of the fixtures, as text that tokenizes back to the same ids.
std::string golden_window_text(const Tokenizer& tok) {
  auto j = test::read_json(test::fixture("models/wikitext2_test_windows.json"));
  std::vector<int> ids;
  for (const auto& w : j["input_ids"])
    for (const auto& id : w) ids.push_back(id.get<int>());
  std::string text = tok.decode(std::vector<int>(ids.begin() + 1, ids.end()));
  EXPECT_EQ(tok.encode(text, true), ids) << "the decoded text must re-encode to the golden ids";
  return text;
}

nlohmann::json run_json(std::vector<std::string> args) {
  args.insert(args.begin(), "perplexity");
  args.insert(args.end(), {"--json", "--no-progress", "-t", "2"});
  auto r = test::run_cli(args);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  return r.exit_code == 0 ? nlohmann::json::parse(r.out) : nlohmann::json();
}

TEST(PerplexityCli, TextFileReproducesTheGoldenPerplexity) {
  test::TempDir tmp;
  std::ofstream(tmp / "wiki.txt", std::ios::binary) << golden_window_text(Tokenizer::from_folder(kH256));
  auto j = run_json({"-m", kH256, "--dataset", "text", "--data", tmp / "wiki.txt", "--seqlen", "128"});
  ASSERT_EQ(j["results"].size(), 1u);
  const auto& r = j["results"][0];
  auto g = test::read_json(kH256 + "/golden_logits.json")["wikitext2_test_ppl"];
  EXPECT_NEAR(r["ppl"].get<double>() / g["ppl"].get<double>(), 1.0, 1e-4);
  EXPECT_EQ(r["protocol"], "gptq");
  EXPECT_EQ(r["seqlen"], 128);
  EXPECT_EQ(r["windows"], 4);
  EXPECT_EQ(r["tokens"], 512);
  EXPECT_EQ(r["scored_tokens"], 508);
  EXPECT_EQ(r["window_nll"].size(), 4u);
  EXPECT_GT(r["tokens_per_second"].get<double>(), 0);
  EXPECT_EQ(r["format"], "f16");
  EXPECT_EQ(j["datasets"][0]["corpus_tokens"], 512);
  EXPECT_EQ(j["datasets"][0]["text_rule"], "file text as is, tokenized once with one BOS");
}

TEST(PerplexityCli, ComparesModelsAgainstAKldBase) {
  test::TempDir tmp;
  std::ofstream(tmp / "wiki.txt", std::ios::binary) << golden_window_text(Tokenizer::from_folder(kH256));
  std::vector<std::string> args = {"-m", kH256, "-m", kGqa, "--kld-base", kH256, "--data", tmp / "wiki.txt",
                                   "--seqlen", "128", "--limit", "2"};
  auto j = run_json(args);
  ASSERT_EQ(j["results"].size(), 2u);  // the base is listed with -m: no separate base row
  EXPECT_EQ(j["kld_base"], "llama-rand-h256");
  const auto &self = j["results"][0], gqa = j["results"][1];
  EXPECT_TRUE(self["is_base"].get<bool>());
  EXPECT_EQ(self["kld"]["mean"].get<double>(), 0.0);  // the base's own logits: exactly zero
  EXPECT_EQ(self["kld"]["top1_agreement"].get<double>(), 1.0);
  EXPECT_FALSE(gqa["is_base"].get<bool>());
  EXPECT_GT(gqa["kld"]["mean"].get<double>(), 0.05);
  EXPECT_LE(gqa["kld"]["median"].get<double>(), gqa["kld"]["p99"].get<double>());
  EXPECT_LE(gqa["kld"]["p99"].get<double>(), gqa["kld"]["max"].get<double>());
  EXPECT_EQ(gqa["kld"]["count"], 2 * 127);

  // Without the base among -m, it gets its own first row (no KLD) and the KLD is the same.
  auto j2 = run_json({"-m", kGqa, "--kld-base", kH256, "--data", tmp / "wiki.txt", "--seqlen", "128", "--limit", "2"});
  ASSERT_EQ(j2["results"].size(), 2u);
  EXPECT_TRUE(j2["results"][0]["is_base"].get<bool>());
  EXPECT_FALSE(j2["results"][0].contains("kld"));
  EXPECT_DOUBLE_EQ(j2["results"][0]["ppl"].get<double>(), self["ppl"].get<double>());
  EXPECT_DOUBLE_EQ(j2["results"][1]["kld"]["mean"].get<double>(), gqa["kld"]["mean"].get<double>());

  // The text report names everything and ends with the comparison table.
  args.insert(args.begin(), "perplexity");
  args.insert(args.end(), {"--no-progress", "-t", "2"});
  auto r = test::run_cli(args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* s : {"protocol gptq, seqlen 128: 2 of 4 windows, 127 of 128 positions scored per window", "KLD mean",
                        "top-1", "llama-rand-h256 (base)", "0 (base)", "llama-rand-h256-gqa", "text (gptq seqlen 128)"})
    EXPECT_NE(r.out.find(s), std::string::npos) << s << "\n" << r.out;
}

TEST(PerplexityCli, SeveralDatasetsAndTheLlamaCppProtocol) {
  auto j = run_json({"-m", kGqa, "--dataset", "wikitext2", "--data", test::shared("data/wikitext2-test.txt"),
                     "--dataset", "ptb-new", "--data", test::shared("data/ptb-test.txt"), "--seqlen", "64", "--limit",
                     "2"});
  ASSERT_EQ(j["results"].size(), 2u);
  EXPECT_EQ(j["results"][0]["dataset"], "wikitext2");
  EXPECT_EQ(j["results"][1]["dataset"], "ptb-new");
  EXPECT_EQ(j["datasets"][0]["text_rule"], "2891 rows joined with \"\\n\\n\", tokenized once with one BOS");
  EXPECT_EQ(j["datasets"][1]["text_rule"], "3761 rows joined with \" \", tokenized once with one BOS");
  EXPECT_NE(j["results"][0]["ppl"], j["results"][1]["ppl"]);

  auto l = run_json({"-m", kGqa, "--protocol", "llamacpp", "--ctx", "64", "--limit", "3", "--dataset", "wikitext2",
                     "--data", test::shared("data/wikitext2-test.txt")});
  ASSERT_EQ(l["results"].size(), 1u);
  EXPECT_EQ(l["results"][0]["protocol"], "llamacpp");
  EXPECT_EQ(l["results"][0]["ctx"], 64);
  EXPECT_EQ(l["results"][0]["scored_tokens"], 3 * 31);
  EXPECT_EQ(l["datasets"][0]["first_scored_row"], 32);
}

// An interrupted run (simulated: a checkpoint holding only the first window) resumes and ends
// with exactly the scores of an uninterrupted run; a finished one is reprinted without evaluating.
TEST(PerplexityCli, CheckpointResumesAnInterruptedRun) {
  test::TempDir tmp;
  const std::string data = tmp / "wiki.txt";  // the first 20 rows of the test split: quick to tokenize
  {
    std::ifstream in(test::shared("data/wikitext2-test.txt"));
    std::ofstream out(data);
    std::string line;
    for (int i = 0; i < 20 && std::getline(in, line); ++i) out << line << "\n";
  }
  auto args = [&](const std::string& limit, const std::string& cp) {
    return std::vector<std::string>{"-m", kGqa, "--dataset", "wikitext2", "--data", data, "--seqlen", "64",
                                    "--limit", limit, "--checkpoint", cp};
  };
  auto one = run_json(args("1", tmp / "one.json"));
  auto full = run_json(args("3", tmp / "full.json"));
  auto cp_one = test::read_json(tmp / "one.json"), cp_full = test::read_json(tmp / "full.json");
  ASSERT_EQ(cp_full["runs"].size(), 1u);
  const std::string key = cp_full["runs"].begin().key();
  EXPECT_EQ(cp_full["runs"][key]["windows_done"], 3);
  nlohmann::json partial = cp_full;
  partial["runs"][key] = cp_one["runs"].begin().value();  // the same first window
  partial["runs"][key]["windows_total"] = 3;
  std::ofstream(tmp / "partial.json") << partial.dump();

  auto cli = args("3", tmp / "partial.json");
  cli.insert(cli.begin(), "perplexity");
  cli.insert(cli.end(), {"--json", "--no-progress", "-t", "2"});
  auto r = test::run_cli(cli);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("1 of 3 windows already evaluated"), std::string::npos) << r.err;
  auto resumed = nlohmann::json::parse(r.out)["results"][0];
  EXPECT_EQ(resumed["window_nll"], full["results"][0]["window_nll"]);
  EXPECT_EQ(resumed["ppl"], full["results"][0]["ppl"]);
  EXPECT_EQ(resumed["ppl_stderr"], full["results"][0]["ppl_stderr"]);
  EXPECT_EQ(test::read_json(tmp / "partial.json")["runs"][key]["windows_done"], 3);

  r = test::run_cli(cli);  // finished: nothing left to evaluate
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("3 of 3 windows already evaluated"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("perplexity wikitext2"), std::string::npos) << "no progress: no evaluation";
  EXPECT_EQ(nlohmann::json::parse(r.out)["results"][0]["ppl"], full["results"][0]["ppl"]);
  EXPECT_EQ(one["results"][0]["window_nll"][0], full["results"][0]["window_nll"][0]);

  std::ofstream(tmp / "bad.json") << "{not json";
  auto bad = test::run_cli({"perplexity", "-m", kGqa, "--data", data, "--seqlen", "64", "--checkpoint", tmp / "bad.json"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("bad.json: not a perplexity checkpoint"), std::string::npos) << bad.err;
}

TEST(PerplexityCli, BadInputGivesOneLineErrors) {
  test::TempDir tmp;
  std::ofstream(tmp / "empty.txt") << "";
  std::ofstream(tmp / "short.txt") << "Just a few words.";
  struct Case {
    std::vector<std::string> args;
    std::string message;
  } cases[] = {
      {{"--data", tmp / "empty.txt"}, "empty.txt: the file is empty"},
      {{"--data", tmp / "short.txt"}, "shorter than one window of 2048 tokens (--seqlen 2048)"},
      {{"--data", tmp / "short.txt", "--ctx", "64"}, "--ctx applies to --protocol llamacpp"},
      {{"--data", tmp / "short.txt", "--dataset", "ptb", "--dataset", "c4"}, "give one --dataset per --data file"},
      {{"--data", tmp / "short.txt", "--dataset", "c4"}, "c4 expects an allenai/c4 shard"},
      {{"--data", tmp / "nope.txt"}, "nope.txt: cannot open"},
      {{"--dataset", "wikitext2"}, "--data FILE is required"},
  };
  for (const auto& c : cases) {
    std::vector<std::string> args = {"perplexity", "-m", kGqa};
    args.insert(args.end(), c.args.begin(), c.args.end());
    auto r = test::run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << c.message;
    EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  }
}

}  // namespace
}  // namespace metharme
