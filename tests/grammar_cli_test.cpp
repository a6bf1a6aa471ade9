// --grammar and --grammar-file on `metharme generate` and `chat`: sampled replies match, and a
// malformed grammar fails with its line and column before any model is loaded.
#include <gtest/gtest.h>

#include <fstream>
#include <regex>

#include "support/test_util.h"

namespace metharme {
namespace {

const std::string kModel = test::fixture("models/stories260k");

TEST(GrammarCli, GenerateOutputMatchesOverSeeds) {
  const std::string g = "root ::= \" \" (\"Lily\" | \"Tim\") \" was \" [a-z]{2,8} \".\"";
  const std::regex want("^ (Lily|Tim) was [a-z]{2,8}\\.$");
  for (int seed = 1; seed <= 6; ++seed) {
    auto r = test::run_cli({"generate", "-m", kModel, "-t", "1", "-p", "Once upon a time", "-n", "40", "--temp", "1",
                            "--seed", std::to_string(seed), "--grammar", g});
    ASSERT_EQ(r.exit_code, 0) << r.err;
    std::string out = r.out;
    if (!out.empty() && out.back() == '\n') out.pop_back();  // the CLI ends its output with a newline
    EXPECT_TRUE(std::regex_match(out, want)) << "seed " << seed << ": '" << out << "'";
  }
}

TEST(GrammarCli, ChatRepliesFollowAGrammarFile) {
  test::TempDir d;
  {
    std::ofstream f(d / "yesno.gbnf");
    f << "# answers only\nroot ::= (\"Yes\" | \"No\") \", \" [a-z ]{1,20} \".\"\n";
  }
  auto r = test::run_cli(
      {"chat", "-m", kModel, "-t", "1", "--temp", "1", "--seed", "4", "-n", "60", "--grammar-file", d / "yesno.gbnf"},
      "Are you there?\nWhat is your name?\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::string out = r.out;
  int replies = 0;
  const std::regex reply("(Yes|No), [a-z ]{1,20}\\.");
  for (auto it = std::sregex_iterator(out.begin(), out.end(), reply); it != std::sregex_iterator(); ++it) ++replies;
  EXPECT_EQ(replies, 2) << out;
}

TEST(GrammarCli, MalformedGrammarNamesLineAndColumn) {
  auto r = test::run_cli({"generate", "-m", kModel, "-p", "Hi", "--grammar", "root ::= \"a\"\nx ::= [b"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--grammar: grammar: line 2, column 7: unterminated character class"), std::string::npos)
      << r.err;
  r = test::run_cli({"generate", "-m", kModel, "-p", "Hi", "--grammar-file", "/nonexistent/g.gbnf"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--grammar-file: cannot read /nonexistent/g.gbnf"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace metharme
