// Speculative decoding end to end: `metharme generate` with --lookup and --draft prints what plain
// decoding prints, a draft with another vocabulary is refused, and the HTTP APIs answer a server
// with drafting exactly as one without.
#include <gtest/gtest.h>

#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using json = nlohmann::json;

TEST(SpecCli, GenerateWithDraftsPrintsThePlainText) {
  const std::string model = test::fixture("models/stories260k");
  std::vector<std::string> base{"generate", "-m", model, "-p", "Once upon a time", "-n", "80",
                                "--temp",   "0",  "-t",  "1"};
  auto plain = test::run_cli(base);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  ASSERT_GT(plain.out.size(), 40u);
  for (std::vector<std::string> extra : {std::vector<std::string>{"--lookup", "--lookup-ngram-min", "1"},
                                         std::vector<std::string>{"--draft", model, "--draft-max", "6"}}) {
    auto args = base;
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = test::run_cli(args);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    EXPECT_EQ(r.out, plain.out) << extra[0];
    EXPECT_NE(r.err.find("speculative: "), std::string::npos) << r.err;
  }
}

TEST(SpecCli, ChatWithDraftsPrintsThePlainReplies) {
  const std::string model = test::fixture("models/stories260k");
  const std::string turns = "Tell me a story.\nWhat did the dog do?\n/retry\nAnd then?\n";
  std::vector<std::string> base{"chat", "-m", model, "-t", "1", "--temp", "0", "-n", "48", "--stats"};
  auto plain = test::run_cli(base, turns);
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  auto args = base;
  for (const char* f : {"--lookup", "--lookup-ngram-min", "1", "--draft", model.c_str()}) args.push_back(f);
  auto spec = test::run_cli(args, turns);
  ASSERT_EQ(spec.exit_code, 0) << spec.err;
  EXPECT_EQ(spec.out, plain.out);
  EXPECT_NE(spec.err.find("[speculative: "), std::string::npos) << spec.err;
}

TEST(SpecCli, RefusesADraftWithAnotherVocabulary) {
  auto r = test::run_cli({"generate", "-m", test::fixture("models/stories260k"), "-p", "Once", "-n", "4", "--draft",
                          test::fixture("models/llama-rand-h256")});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("needs the same tokenizer"), std::string::npos) << r.err;
  r = test::run_cli({"generate", "-m", test::fixture("models/stories260k"), "-p", "Once", "--lookup",
                     "--lookup-ngram-min", "4", "--lookup-ngram-max", "2"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--lookup-ngram-min"), std::string::npos) << r.err;
}

TEST(SpecServeHttp, GreedyAnswersEqualAServerWithoutDrafts) {
  test::ServerSetup plain_setup;
  test::TestServer plain(plain_setup);
  test::ServerSetup spec_setup;
  spec_setup.spec = SpecConfig{5, true, 1, 3, nullptr};
  test::TestServer spec(spec_setup);
  const json bodies[] = {
      {{"prompt", "Once upon a time"}, {"max_length", 60}, {"temperature", 0}},
      {{"prompt", "Lily and Ben"}, {"max_length", 50}, {"top_k", 1}, {"rep_pen", 1.2}, {"stop_sequence", {"."}}},
      {{"prompt", "The dog"}, {"max_length", 40}, {"temperature", 0}, {"dry_multiplier", 0.8}, {"min_length", 10}},
  };
  for (const json& b : bodies) {
    auto a = plain.post("/api/v1/generate", b);
    auto c = spec.post("/api/v1/generate", b);
    ASSERT_EQ(a.status, 200) << a.body;
    ASSERT_EQ(c.status, 200) << c.body;
    EXPECT_EQ(c.json()["results"][0]["text"], a.json()["results"][0]["text"]) << b.dump();
  }
  json oa = {{"prompt", "Once upon a time there was"}, {"max_tokens", 48}, {"temperature", 0}, {"logprobs", 2}};
  auto a = plain.post("/v1/completions", oa), c = spec.post("/v1/completions", oa);
  ASSERT_EQ(c.status, 200) << c.body;
  EXPECT_EQ(c.json()["choices"][0]["text"], a.json()["choices"][0]["text"]);
  EXPECT_EQ(c.json()["choices"][0]["logprobs"]["tokens"], a.json()["choices"][0]["logprobs"]["tokens"]);
  EXPECT_GT(spec.engine().stats().spec.accepted, 0);
}

}  // namespace
}  // namespace metharme
