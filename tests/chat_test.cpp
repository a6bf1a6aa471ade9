// The Metharme prompt format (exact strings and token ids), conversation files, the sliding
// context window, stop strings across token boundaries and streamed UTF-8.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "chat/conversation.h"
#include "chat/metharme.h"
#include "chat/session.h"
#include "chat/stop.h"
#include "support/model_util.h"
#include "support/test_util.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"

namespace metharme {
namespace {

const Tokenizer& llama_tok() {
  static Tokenizer t = Tokenizer::from_folder(test::fixture("tokenizer/llama"));
  return t;
}

// The golden record (python sentencepiece) whose text is `text`: an independent oracle.
std::vector<int> golden_ids(const std::string& text) {
  static auto recs = test::read_jsonl(test::fixture("tokenizer/llama/golden_tokenization.jsonl"));
  for (const auto& r : recs)
    if (r["text"] == text) return r["ids"].get<std::vector<int>>();
  ADD_FAILURE() << "no golden record for " << text;
  return {};
}

std::vector<int> with_bos(std::vector<int> ids) {
  ids.insert(ids.begin(), 1);
  return ids;
}

TEST(MetharmeFormat, MultiTurnPromptStrings) {
  std::vector<Message> msgs = {{Role::kUser, "Hi!"}, {Role::kModel, "Hello, traveler."}, {Role::kUser, "Who are you?"}};
  EXPECT_EQ(render_prompt("Be kind.", "", msgs, true),
            "<|system|>Be kind.<|user|>Hi!<|model|>Hello, traveler.<|user|>Who are you?<|model|>");
  EXPECT_EQ(render_prompt("Be kind.", " Facts: sky is green.", msgs, false),
            "<|system|>Be kind. Facts: sky is green.<|user|>Hi!<|model|>Hello, traveler.<|user|>Who are you?");
  // No system prompt: no system turn at all.
  EXPECT_EQ(render_prompt("", "", {{Role::kUser, "Yo"}}, true), "<|user|>Yo<|model|>");
  // OpenAI-style lists put system turns where they are; "assistant" is the model.
  EXPECT_EQ(render_messages({{Role::kSystem, "S"}, {Role::kUser, "U"}, {*parse_role("assistant"), "A"}}, true),
            "<|system|>S<|user|>U<|model|>A<|model|>");
  EXPECT_FALSE(parse_role("narrator").has_value());
}

TEST(MetharmeFormat, TokenIdsMatchSentencePieceOnTheWholePrompt) {
  const Tokenizer& tok = llama_tok();
  // Records 110-112 of the tokenizer goldens are Metharme prompts.
  std::string sys = "Enter RP mode. Pretend to be Aqua, whose persona follows:\nAqua is a cheerful water goddess.";
  std::string p1 = render_prompt(sys, "", {{Role::kUser, "Hello!"}}, true);
  EXPECT_EQ(tok.encode(p1, true), with_bos(golden_ids(p1)));
  std::string sys2 = "Enter RP mode. You shall reply to the user while staying in character, and generate long responses.";
  std::string p2 = render_prompt(sys2, "", {{Role::kUser, "What is your name?"}, {Role::kModel, "My name is Aqua!"}}, false);
  EXPECT_EQ(tok.encode(p2, true), with_bos(golden_ids(p2)));
  std::string p3 = render_prompt("", "", {{Role::kUser, "Write a haiku about autumn."}}, true);
  EXPECT_EQ(tok.encode(p3, true), with_bos(golden_ids(p3)));
  // Spelled out: BOS once, markers are plain text, and pieces merge across turns (".<").
  EXPECT_EQ(tok.encode(p3, true), (std::vector<int>{1, 529, 29989, 1792, 29989, 29958, 6113, 263, 447, 18282, 1048, 1120,
                                                    1227, 19423, 29989, 4299, 29989, 29958}));
}

TEST(MetharmeFormat, RepliesKeepTheModelsOwnTokens) {
  // A marker in the middle of text has no dummy-prefix space: "<" is 29966, not "▁<" (529).
  EXPECT_EQ(encode_continuation(llama_tok(), "<|user|>"), (std::vector<int>{29966, 29989, 1792, 29989, 29958}));
  EXPECT_EQ(encode_continuation(llama_tok(), " hello"), (std::vector<int>{22172}));  // "▁hello"
  // A reply generated in the session goes into later prompts as the tokens the model chose,
  // which need not be SentencePiece's encoding of its text; the text around it is encoded in chunks.
  test::Loaded m = test::load_model(test::fixture("models/llama-rand-h256"), 1, 96);
  const Tokenizer& tok = llama_tok();
  ChatSession chat(*m.rt, tok);
  Conversation& c = chat.conversation();
  c.system = "Be brief.";
  std::vector<int> reply_ids = {29950, 295};  // any ids: they are copied, not re-read
  c.messages = {{Role::kUser, "Hi"}, {Role::kModel, "Hel", reply_ids}, {Role::kUser, "Next"}};
  std::vector<int> want = tok.encode("<|system|>Be brief.<|user|>Hi<|model|>", true);
  want.insert(want.end(), reply_ids.begin(), reply_ids.end());
  auto tail = encode_continuation(tok, "<|user|>Next<|model|>");
  want.insert(want.end(), tail.begin(), tail.end());
  EXPECT_EQ(chat.build_prompt(8).ids, want);
  // Without ids (a loaded conversation) the whole prompt is one string.
  c.messages[1].ids.clear();
  EXPECT_EQ(chat.build_prompt(8).ids, tok.encode("<|system|>Be brief.<|user|>Hi<|model|>Hel<|user|>Next<|model|>", true));
}

TEST(Conversation, JsonRoundTripAndErrors) {
  Conversation c{"sys \"quoted\"", "mem\nline", {{Role::kUser, "héllo 😀"}, {Role::kModel, "ok"}}};
  EXPECT_EQ(conversation_from_json(conversation_to_json(c), "x"), c);
  test::TempDir d;
  save_conversation(d / "c.json", c);
  EXPECT_EQ(load_conversation(d / "c.json"), c);
  for (const auto& entry : std::filesystem::directory_iterator(d.path()))
    EXPECT_EQ(entry.path().filename(), "c.json") << "no temp file left behind";

  auto err = [](const std::string& text) {
    try {
      conversation_from_json(text, "f.json");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(err("{").find("f.json: not valid JSON"), std::string::npos);
  EXPECT_NE(err("[]").find("expected a JSON object"), std::string::npos);
  EXPECT_NE(err(R"({"messages": [], "colour": 1})").find("unknown field \"colour\""), std::string::npos);
  EXPECT_NE(err(R"({"messages": [{"role": "narrator", "text": "x"}]})").find("message 0: role must be"), std::string::npos);
  EXPECT_NE(err(R"({"messages": [{"role": "user"}]})").find("needs both"), std::string::npos);
  EXPECT_NE(err(R"({"messages": [{"role": "user", "text": 3}]})").find("\"text\" must be a string"), std::string::npos);
  EXPECT_NE(err(R"({"messages": [], "version": 9})").find("unsupported version 9"), std::string::npos);
  EXPECT_NE(err(R"({"system": "x"})").find("missing \"messages\""), std::string::npos);
  EXPECT_THROW(load_conversation(d / "missing.json"), Error);
}

TEST(StopStream, MatchesAcrossPiecesAndTrims) {
  StopStream s({"<|user|>", "\nYou:"}, true);
  std::string shown;
  for (const char* piece : {"Hi", " there", "<", "|", "us", "er", "|>", "more"}) shown += s.push(piece);
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(s.stop_index(), 0);
  EXPECT_EQ(shown, "Hi there");
  EXPECT_EQ(s.text(), "Hi there");
  EXPECT_EQ(s.push("late"), "") << "nothing after a stop";
}

TEST(StopStream, HoldsBackOnlyPossibleStarts) {
  StopStream s({"<|user|>"}, true);
  EXPECT_EQ(s.push("a<"), "a");     // "<" may start the stop string
  EXPECT_EQ(s.push("|u"), "");      // "<|u" still may
  EXPECT_EQ(s.push("x"), "<|ux");   // now it cannot: released
  EXPECT_EQ(s.push("<|"), "");
  EXPECT_EQ(s.finish(), "<|");      // end of the reply releases held text
  EXPECT_FALSE(s.stopped());
  EXPECT_EQ(s.text(), "a<|ux<|");
}

TEST(StopStream, WithoutTrimTheStopStringIsKeptAndTheRestCut) {
  StopStream s({"END"}, false);
  std::string shown = s.push("abc E");
  shown += s.push("NDxyz");
  EXPECT_TRUE(s.stopped());
  EXPECT_EQ(shown, "abc END");
  EXPECT_EQ(s.text(), "abc END");
}

TEST(StopStream, EarliestOfSeveralStopsWins) {
  StopStream s({"cd", "bcd"}, true);
  EXPECT_EQ(s.push("abcdef"), "a");
  EXPECT_EQ(s.stop_index(), 1);
  StopStream none({}, true);
  EXPECT_EQ(none.push("x<|user|>"), "x<|user|>");
}

// Text of the byte-fallback piece for byte b (LLaMA ids 3..258).
int byte_id(unsigned char b) { return 3 + int(b); }

TEST(StreamedText, MultiByteCharactersOverByteFallbackPieces) {
  const Tokenizer& tok = llama_tok();
  // "ok 😀" where the emoji arrives as four byte pieces, then "é" as two, then a stop string
  // whose first character is itself split over byte pieces.
  const std::string emoji = "\xF0\x9F\x98\x80", e_acute = "\xC3\xA9", stop = e_acute + "!";
  std::vector<int> ids = tok.encode("ok", false);
  ids.push_back(29871);  // "▁", a lone space
  for (unsigned char b : emoji) ids.push_back(byte_id(b));
  for (unsigned char b : e_acute) ids.push_back(byte_id(b));
  ids.push_back(byte_id('x'));
  for (unsigned char b : stop) ids.push_back(byte_id(b));
  StreamDecoder dec(tok, true);
  StopStream stops({stop}, true);
  std::vector<std::string> shown;
  for (int id : ids) shown.push_back(stops.push(dec.push(id)));
  // Nothing is printed while a character is incomplete, and never half a character.
  const size_t first_emoji = tok.encode("ok", false).size() + 1;
  for (size_t k = 0; k < 3; ++k) EXPECT_EQ(shown[first_emoji + k], "") << "emoji byte " << k;
  EXPECT_EQ(shown[first_emoji + 3], emoji);
  std::string all;
  for (const auto& s : shown) all += s;
  EXPECT_TRUE(stops.stopped());
  EXPECT_EQ(all, "ok " + emoji + e_acute + "x");
  std::vector<int> before_stop(ids.begin(), ids.end() - 3);
  EXPECT_EQ(all, tok.decode(before_stop));
}

// A session over the random LLaMA (real tokenizer) with a small context for window tests.
struct Small {
  test::Loaded m = test::load_model(test::fixture("models/llama-rand-h256"), 1, 96);
  Tokenizer tok = Tokenizer::from_folder(test::fixture("models/llama-rand-h256"));
};

TEST(ContextWindow, KeepsTheSystemPromptAndDropsWholeOldestTurns) {
  Small s;
  ChatSession chat(*s.m.rt, s.tok);
  Conversation& c = chat.conversation();
  c.system = "You are Aqua, a water goddess.";
  c.memory = " Aqua likes tea.";
  for (int i = 0; i < 6; ++i) {
    c.messages.push_back({Role::kUser, "Question number " + std::to_string(i) + " about the sea?"});
    c.messages.push_back({Role::kModel, "Answer " + std::to_string(i) + ": waves and salt."});
  }
  c.messages.push_back({Role::kUser, "Last one?"});
  const int budget = 32;  // reply tokens: the prompt may use 96 - 32 = 64
  ChatPrompt p = chat.build_prompt(budget);
  EXPECT_LE(int(p.ids.size()), 96 - budget);
  ASSERT_GT(p.first_message, 0u) << "the whole conversation cannot fit";
  EXPECT_EQ(c.messages[p.first_message].role, Role::kUser) << "a window starts with a whole exchange";
  std::vector<Message> window(c.messages.begin() + std::ptrdiff_t(p.first_message), c.messages.end());
  EXPECT_EQ(p.ids, s.tok.encode(render_prompt(c.system, c.memory, window, true), true));
  auto header = s.tok.encode(render_header(c.system, c.memory), true);
  EXPECT_TRUE(std::equal(header.begin(), header.end() - 1, p.ids.begin())) << "system prompt and memory stay on top";
  // Minimal: one more exchange would not fit.
  std::vector<Message> more(c.messages.begin() + std::ptrdiff_t(p.first_message - 2), c.messages.end());
  EXPECT_GT(int(s.tok.encode(render_prompt(c.system, c.memory, more, true), true).size()), 96 - budget);
  // A reply budget that leaves no room even for the last message is a clear error.
  try {
    chat.build_prompt(90);
    ADD_FAILURE() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("do not fit the context of 96"), std::string::npos) << e.what();
  }
}

TEST(ContextWindow, SayKeepsTheConversationConsistentOnErrors) {
  Small s;
  ChatSession chat(*s.m.rt, s.tok);
  GenerateOptions go;
  go.max_tokens = 90;
  std::string huge(400, 'x');
  EXPECT_THROW(chat.say(huge, go, nullptr), Error);
  EXPECT_TRUE(chat.conversation().messages.empty()) << "a message that cannot be answered is not kept";
  EXPECT_THROW(chat.respond(go, nullptr), Error);
  EXPECT_THROW(chat.retry(go, nullptr), Error);
  EXPECT_FALSE(chat.undo());
}

}  // namespace
}  // namespace metharme
