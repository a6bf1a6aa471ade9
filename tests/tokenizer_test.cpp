#include <gtest/gtest.h>

#include "support/test_util.h"
#include "tokenizer/tokenizer.h"

namespace metharme {
namespace {

void check_goldens(const std::string& model, const std::string& golden) {
  Tokenizer tok(model);
  auto records = test::read_jsonl(golden);
  ASSERT_GT(records.size(), 50u);
  for (const auto& r : records) {
    std::string text = r["text"];
    std::vector<int> want = r["ids"];
    EXPECT_EQ(tok.encode(text, false), want) << "text: " << r["text"].dump();
    auto with_bos = tok.encode(text, true);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], 1);
    std::string decoded = r["decoded"];
    EXPECT_EQ(tok.decode(want), decoded) << "ids of " << r["text"].dump();
    // Streaming the ids one by one yields the same text.
    StreamDecoder dec(tok);
    std::string streamed;
    for (int id : want) streamed += dec.push(id);
    streamed += dec.flush();
    EXPECT_EQ(streamed, decoded) << "streamed " << r["text"].dump();
  }
}

TEST(Tokenizer, LlamaGoldens) {
  check_goldens(test::fixture("tokenizer/llama/tokenizer.model"), test::fixture("tokenizer/llama/golden_tokenization.jsonl"));
}

TEST(Tokenizer, Stories260kGoldens) {
  check_goldens(test::fixture("models/stories260k/tokenizer.model"),
                test::fixture("models/stories260k/golden_tokenization.jsonl"));
}

TEST(Tokenizer, StreamsMultiByteCharactersOverByteFallback) {
  Tokenizer tok(test::fixture("tokenizer/llama/tokenizer.model"));
  // U+1F642 is not a piece: byte fallback gives four byte tokens.
  std::string text = "ok \xF0\x9F\x99\x82 done";
  auto ids = tok.encode(text, false);
  StreamDecoder dec(tok);
  std::vector<std::string> parts;
  for (int id : ids) parts.push_back(dec.push(id));
  std::string all;
  for (auto& p : parts) all += p;
  EXPECT_EQ(all + dec.flush(), text);
  // No part ever holds half a character.
  int n_byte_tokens = 0;
  for (int id : ids)
    if (tok.is_byte(id)) ++n_byte_tokens;
  EXPECT_EQ(n_byte_tokens, 4);
  bool saw_emoji_part = false;
  for (auto& p : parts) {
    if (p.find("\xF0\x9F\x99\x82") != std::string::npos) saw_emoji_part = true;
    if (!p.empty()) {
      EXPECT_NE(uint8_t(p.back()) & 0xC0, 0xC0u) << "part ends inside a character";
    }
  }
  EXPECT_TRUE(saw_emoji_part);
}

TEST(Tokenizer, InvalidBytesBecomeReplacementCharacters) {
  Tokenizer tok(test::fixture("tokenizer/llama/tokenizer.model"));
  int b_f0 = 3 + 0xF0, b_41 = 3 + 0x41;
  StreamDecoder dec(tok);
  std::string s = dec.push(b_f0);
  EXPECT_EQ(s, "");
  s += dec.push(b_41);  // 0xF0 cannot be followed by 'A'
  s += dec.flush();
  EXPECT_EQ(s, "\xEF\xBF\xBD" "A");
}

TEST(Tokenizer, MissingModelIsAClearError) {
  try {
    Tokenizer tok("/nonexistent/tokenizer.model");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tokenizer.model"), std::string::npos);
  }
}

}  // namespace
}  // namespace metharme
