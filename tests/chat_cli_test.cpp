// `metharme chat` and `metharme generate` through the real binary with piped stdin: the output
// equals what the library writes for the same settings, seeds reproduce, commands and errors.
#include <gtest/gtest.h>

#include "chat/session.h"
#include "support/model_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

const std::string kModel = test::fixture("models/llama-rand-h256");

// The sampler settings `chat` uses by default (KoboldAI Lite's), at temperature 0.9.
GenerateOptions cli_defaults(int n, uint64_t seed) {
  GenerateOptions go;
  go.max_tokens = n;
  go.sampler.temperature = 0.9f;
  go.sampler.top_k = 100;
  go.sampler.top_p = 0.92f;
  go.sampler.rep_pen = 1.07f;
  go.sampler.rep_pen_range = 360;
  go.sampler.rep_pen_slope = 0.7f;
  go.sampler.seed = seed;
  go.stop = metharme_stop_strings();
  return go;
}

std::string lstrip(const std::string& s) {
  size_t k = s.find_first_not_of(" \n");
  return k == std::string::npos ? "" : s.substr(k);
}

bool valid_utf8(const std::string& s) {
  for (size_t i = 0; i < s.size();) {
    unsigned char c = uint8_t(s[i]);
    int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || i + size_t(n) > s.size()) return false;
    for (int k = 1; k < n; ++k)
      if ((uint8_t(s[i + size_t(k)]) & 0xC0) != 0x80) return false;
    i += size_t(n);
  }
  return true;
}

std::vector<std::string> chat_args(const std::vector<std::string>& extra) {
  std::vector<std::string> a = {"chat", "-m", kModel, "-t", "1"};
  a.insert(a.end(), extra.begin(), extra.end());
  return a;
}

TEST(ChatCli, PipedTurnsPrintWhatTheLibraryWrites) {
  test::TempDir d;
  const std::string sys = "You are Aqua, a cheerful water goddess.";
  auto r = test::run_cli(chat_args({"--temp", "0.9", "-n", "12", "--seed", "11", "--system", sys}),
                         "Hello!\nHow are you today?\n/save " + (d / "c.json") + "\n");
  ASSERT_EQ(r.exit_code, 0) << r.err;

  auto m = test::load_model(kModel, 1, 2048);
  Tokenizer tok = Tokenizer::from_folder(kModel);
  ChatSession chat(*m.rt, tok);
  chat.conversation().system = sys;
  auto a = chat.say("Hello!", cli_defaults(12, 11), nullptr);
  auto b = chat.say("How are you today?", cli_defaults(12, 12), nullptr);  // seed + reply count
  EXPECT_EQ(r.out, lstrip(a.text) + "\n" + lstrip(b.text) + "\n");
  EXPECT_TRUE(valid_utf8(r.out));

  Conversation saved = load_conversation(d / "c.json");
  Conversation want = chat.conversation();
  for (auto& msg : want.messages) msg.ids.clear();
  EXPECT_EQ(saved, want);

  // Loading it and going on gives what the library gives from the same conversation.
  auto r2 = test::run_cli(chat_args({"--temp", "0.9", "-n", "12", "--seed", "40"}), "/load " + (d / "c.json") + "\nTell me more.\n");
  ASSERT_EQ(r2.exit_code, 0) << r2.err;
  ChatSession again(*m.rt, tok);
  again.conversation() = saved;
  auto c = again.say("Tell me more.", cli_defaults(12, 40), nullptr);
  EXPECT_EQ(r2.out, lstrip(c.text) + "\n");
}

TEST(ChatCli, SeedsReproduceAndDiffer) {
  const std::string in = "Hi\nWhat now?\n";
  auto a = test::run_cli(chat_args({"--seed", "5", "--temp", "1.5", "--top-k", "0", "--top-p", "1", "-n", "40"}), in);
  auto b = test::run_cli(chat_args({"--seed", "5", "--temp", "1.5", "--top-k", "0", "--top-p", "1", "-n", "40"}), in);
  auto c = test::run_cli(chat_args({"--seed", "6", "--temp", "1.5", "--top-k", "0", "--top-p", "1", "-n", "40"}), in);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  EXPECT_TRUE(valid_utf8(a.out)) << "high-temperature output mixes byte pieces; every character must be whole";
}

TEST(ChatCli, CommandsAndErrorsInAScript) {
  test::TempDir d;
  auto r = test::run_cli(chat_args({"--seed", "1", "-n", "12"}),
                         "/bogus\nHello\n/retry\n/undo\n/save\n/save " + (d / "c.json") + "\n//slash\n");
  EXPECT_EQ(r.exit_code, 1) << "a script with errors fails";
  EXPECT_NE(r.err.find("error: unknown command /bogus (try /help)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("error: usage: /save FILE"), std::string::npos) << r.err;
  Conversation c = load_conversation(d / "c.json");
  ASSERT_EQ(c.messages.size(), 0u) << "/undo removed the exchange that /retry rewrote";
  // Three replies were printed: Hello, its retry, and "/slash" (sent after the save).
  int lines = 0;
  for (char ch : r.out) lines += ch == '\n';
  EXPECT_GE(lines, 3);
}

TEST(ChatCli, BadFlagsAreOneLineErrors) {
  auto one_line_error = [](const std::vector<std::string>& args, const std::string& want) {
    auto r = test::run_cli(args, "");
    EXPECT_EQ(r.exit_code, 1) << want;
    EXPECT_NE(r.err.find(want), std::string::npos) << r.err;
    EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  };
  one_line_error(chat_args({"--top-p", "2"}), "error: sampler: top_p must be in [0, 1] (got 2)");
  one_line_error(chat_args({"--sampler-order", "6,6,0"}), "error: sampler: sampler_order: 6 (rep_pen) appears twice");
  one_line_error(chat_args({"--sampler-order", "6,x"}), "error: sampler order: 'x' is not a sampler id (0..6)");
  one_line_error(chat_args({"--ban", "99999"}), "error: sampler: banned token 99999 is outside the vocabulary (32000)");
  one_line_error(chat_args({"--logit-bias", "5"}), "error: --logit-bias: expected ID:BIAS, got '5'");
  one_line_error(chat_args({"--system-file", "/nonexistent/sys.txt"}), "error: /nonexistent/sys.txt: cannot open");
  one_line_error(chat_args({"-c", "64", "-n", "64"}), "error: --max-reply (64) must be smaller than the context (64)");
  one_line_error(chat_args({"--load", "/nonexistent/c.json"}), "error: /nonexistent/c.json: cannot open");
}

TEST(GenerateCli, SamplerFlagsAndStopStrings) {
  const std::string dir = test::repo("models/stories260k");
  auto m = test::load_model(dir, 1, 512);
  Tokenizer tok = Tokenizer::from_folder(dir);
  // Greedy with a stop string: the text ends before the first "." and equals the library's.
  auto r = test::run_cli({"generate", "-m", dir, "-p", "Once upon a time", "-n", "80", "--temp", "0", "--stop", ".", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  GenerateOptions go;
  go.max_tokens = 80;
  go.sampler.temperature = 0;
  auto full = generate(*m.rt, tok, tok.encode("Once upon a time", true), go, nullptr);
  EXPECT_EQ(r.out, full.text.substr(0, full.text.find('.')) + "\n");
  EXPECT_NE(r.err.find("stopped by stop"), std::string::npos) << r.err;
  auto k = test::run_cli({"generate", "-m", dir, "-p", "Once upon a time", "-n", "80", "--temp", "0", "--stop", ".",
                          "--keep-stop", "-t", "1"});
  EXPECT_EQ(k.out, full.text.substr(0, full.text.find('.') + 1) + "\n");
  // Seeds: same seed, same text; another seed, another text.
  std::vector<std::string> args = {"generate", "-m", dir, "-p", "Once", "-n", "60", "--temp", "1.2", "-t", "1", "--seed"};
  auto s1 = args, s2 = args, s3 = args;
  s1.push_back("9");
  s2.push_back("9");
  s3.push_back("10");
  auto a = test::run_cli(s1), b = test::run_cli(s2), c = test::run_cli(s3);
  EXPECT_EQ(a.out, b.out);
  EXPECT_NE(a.out, c.out);
  // Banning the most likely first token changes the greedy text.
  auto ban = test::run_cli({"generate", "-m", dir, "-p", "Once upon a time", "-n", "5", "--temp", "0", "--ban",
                            std::to_string(full.tokens[0]), "-t", "1"});
  EXPECT_EQ(ban.exit_code, 0) << ban.err;
  EXPECT_NE(ban.out.substr(0, 3), r.out.substr(0, 3));
}

TEST(GenerateCli, TempZeroIsRunCsGreedyText) {
  // run.c's greedy continuation of prompt 1 (128 forward passes), printed by our binary.
  auto g = test::read_json(test::fixture("models/stories260k/golden_generate.json"))["prompts"][1];
  auto gen = g["generated_ids"].get<std::vector<int>>();
  auto r = test::run_cli({"generate", "-m", test::repo("models/stories260k"), "-p", g["prompt"].get<std::string>(), "-n",
                          std::to_string(gen.size()), "--temp", "0", "--echo", "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, g["generated_text_runc_stdout"].get<std::string>() + "\n");
  EXPECT_NE(r.err.find("tok/s"), std::string::npos) << "timings go to stderr: " << r.err;
}

}  // namespace
}  // namespace metharme
