// KoboldCpp's samplers as `metharme generate` flags, through the real binary.
#include <gtest/gtest.h>

#include <map>
#include <sstream>

#include "support/test_util.h"

namespace metharme {
namespace {

test::RunResult gen(std::vector<std::string> extra, int n = 300) {
  std::vector<std::string> args = {"generate", "-m", test::repo("models/stories260k"), "-p", "Once upon a time"};
  for (std::string a : {"-n", "", "--ban-eos", "-t", "1"}) args.push_back(a.empty() ? std::to_string(n) : a);
  args.insert(args.end(), extra.begin(), extra.end());
  return test::run_cli(args);
}

double repeated_trigram_share(const std::string& text) {
  std::istringstream in(text);
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  std::map<std::string, int> seen;
  int total = 0, repeats = 0;
  for (size_t i = 0; i + 2 < w.size(); ++i, ++total) repeats += seen[w[i] + " " + w[i + 1] + " " + w[i + 2]]++ > 0;
  return total ? double(repeats) / total : 0;
}

TEST(SamplerFlagsCli, DryFlagsBreakTheGreedyLoop) {
  auto greedy = gen({"--temp", "0"});
  auto dry = gen({"--temp", "0", "--dry-multiplier", "0.8", "--dry-penalty-last-n", "0"});
  ASSERT_EQ(greedy.exit_code, 0) << greedy.err;
  ASSERT_EQ(dry.exit_code, 0) << dry.err;
  EXPECT_LT(repeated_trigram_share(dry.out), repeated_trigram_share(greedy.out) / 2) << dry.out;
}

TEST(SamplerFlagsCli, SeededMirostatXtcAndFriendsRepeat) {
  std::vector<std::string> flags = {"--temp", "1", "--seed", "5", "--mirostat", "2", "--mirostat-tau", "3"};
  auto a = gen(flags, 40), b = gen(flags, 40);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  auto c = gen({"--temp", "1", "--seed", "5", "--xtc-probability", "0.5", "--dynatemp-range", "0.5",
                "--smoothing-factor", "0.3", "--nsigma", "1.5"},
               40);
  EXPECT_EQ(c.exit_code, 0) << c.err;
}

TEST(SamplerFlagsCli, BadValuesNameTheField) {
  auto r = gen({"--mirostat", "3"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("mirostat"), std::string::npos) << r.err;
  r = gen({"--xtc-probability", "2"});
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("xtc_probability"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace metharme
