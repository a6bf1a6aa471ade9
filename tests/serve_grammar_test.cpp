// Grammars and log-probabilities over the HTTP APIs on the bundled stories260k model: sampled
// output (temperature 1, many seeds) always parses; malformed grammars are 422 with a position;
// logprobs match the model's own log-softmax and arrive in stream chunks and last_logprobs.
#include <gtest/gtest.h>

#include <cmath>
#include <regex>

#include "support/model_util.h"
#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::TestServer;

// True when `text` is JSON, or a prefix of JSON that only lacks its end.
bool json_or_prefix(const std::string& text, bool& complete) {
  complete = json::accept(text);
  if (complete) return true;
  try {
    json parsed = json::parse(text);
    return parsed.is_discarded();
  } catch (const json::parse_error& e) {
    // Every byte was fine: the parser only failed for want of more input.
    return e.byte == text.size() + 1;
  }
  return false;
}

TEST(ServeGrammar, CustomGrammarAlwaysParses) {
  TestServer s;
  const std::string g =
      "root ::= \" \" name \" had a \" animal \".\"\n"
      "name ::= \"Lily\" | \"Tim\" | \"Sue\"   # who\n"
      "animal ::= (\"big \" | \"small \")? (\"dog\" | \"cat\" | \"bird\")\n";
  const std::regex want(" (Lily|Tim|Sue) had a ((big|small) )?(dog|cat|bird)\\.");
  for (int seed = 1; seed <= 16; ++seed) {
    auto r = s.post("/api/v1/generate", {{"prompt", "Once upon a time,"},
                                         {"max_length", 60},
                                         {"temperature", 1},
                                         {"top_k", 0},
                                         {"top_p", 1},
                                         {"sampler_seed", seed},
                                         {"grammar", g}});
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text = r.json()["results"][0]["text"];
    EXPECT_TRUE(std::regex_match(text, want)) << "seed " << seed << ": '" << text << "'";
    EXPECT_EQ(r.json()["results"][0]["finish_reason"], "stop");
  }
}

TEST(ServeGrammar, JsonObjectOutputAlwaysParses) {
  TestServer s;
  int complete = 0;
  for (int seed = 1; seed <= 12; ++seed) {
    auto r = s.post("/v1/completions", {{"prompt", "Once upon a time"},
                                        {"max_tokens", 120},
                                        {"temperature", 1},
                                        {"top_p", 1},
                                        {"seed", seed},
                                        {"response_format", {{"type", "json_object"}}}});
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text = r.json()["choices"][0]["text"];
    bool whole = false;
    EXPECT_TRUE(json_or_prefix(text, whole)) << "seed " << seed << ": " << text;
    EXPECT_EQ(text.substr(0, 1), "{") << text;
    if (r.json()["choices"][0]["finish_reason"] == "stop") {
      EXPECT_TRUE(whole) << text;
      EXPECT_TRUE(json::parse(text).is_object()) << text;
      ++complete;
    }
  }
  std::printf("json_object: %d of 12 replies ended on their own\n", complete);
}

TEST(ServeGrammar, JsonSchemaOutputAlwaysMatches) {
  TestServer s;
  json schema = {{"type", "object"},
                 {"properties",
                  {{"name", {{"type", "string"}, {"maxLength", 10}}},
                   {"mood", {{"enum", {"happy", "sad"}}}},
                   {"age", {{"type", "integer"}}}}},
                 {"required", {"name", "mood"}}};
  for (int seed = 1; seed <= 12; ++seed) {
    json body = {
        {"messages", {{{"role", "user"}, {"content", "Describe a girl as JSON."}}}},
        {"max_tokens", 200},
        {"temperature", 1},
        {"top_p", 1},
        {"seed", seed},
        {"response_format", {{"type", "json_schema"}, {"json_schema", {{"name", "girl"}, {"schema", schema}}}}}};
    auto r = s.post("/v1/chat/completions", body);
    ASSERT_EQ(r.status, 200) << r.body;
    std::string text = r.json()["choices"][0]["message"]["content"];
    ASSERT_TRUE(json::accept(text)) << "seed " << seed << ": " << text;
    json v = json::parse(text);
    ASSERT_TRUE(v.is_object());
    ASSERT_TRUE(v["name"].is_string()) << text;
    size_t chars = 0;  // maxLength counts characters
    for (unsigned char c : v["name"].get<std::string>()) chars += (c & 0xC0) != 0x80;
    EXPECT_LE(chars, 10u) << text;
    EXPECT_TRUE(v["mood"] == "happy" || v["mood"] == "sad") << text;
    EXPECT_TRUE(!v.contains("age") || v["age"].is_number_integer()) << text;
    EXPECT_LE(v.size(), 3u) << text;
  }
}

TEST(ServeGrammar, MalformedGrammarsAre422WithAPosition) {
  TestServer s;
  auto r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"grammar", "root ::= \"a\" item\nitem ::= [b-"}});
  ASSERT_EQ(r.status, 422) << r.body;
  std::string msg = r.json()["detail"]["grammar"][0];
  EXPECT_NE(msg.find("line 2, column 10"), std::string::npos) << msg;
  r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"grammar", "root ::= root \"a\""}});
  ASSERT_EQ(r.status, 422);
  EXPECT_NE(r.json()["detail"]["grammar"][0].get<std::string>().find("left-recursive"), std::string::npos);
  r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"grammar", "root ::= \"a\""}, {"grammar_retain_state", true}});
  EXPECT_EQ(r.status, 422);
  EXPECT_TRUE(r.json()["detail"].contains("grammar_retain_state"));
  r = s.post("/v1/completions", {{"prompt", "Hi"}, {"grammar", "root ::= (\"a\""}});
  ASSERT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("line 1, column 10"), std::string::npos) << r.body;
  EXPECT_EQ(r.json()["error"]["param"], "grammar");
  json bad_schema = {{"type", "json_schema"},
                     {"json_schema", {{"name", "x"}, {"schema", {{"type", "string"}, {"pattern", "^a+$"}}}}}};
  r = s.post("/v1/chat/completions",
             {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"response_format", bad_schema}});
  ASSERT_EQ(r.status, 422) << r.body;
  EXPECT_NE(r.json()["error"]["message"].get<std::string>().find("'pattern'"), std::string::npos) << r.body;
  // A JSON grammar (KoboldCpp reads it as a JSON Schema) works on the Kobold route.
  r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 40}, {"grammar", R"({"enum": ["yes", "no"]})"}});
  ASSERT_EQ(r.status, 200) << r.body;
  std::string text = r.json()["results"][0]["text"];
  EXPECT_TRUE(text == "\"yes\"" || text == "\"no\"") << text;
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}}).status, 200);  // still up
}

// The log-softmax of the model's logits after `prompt`, computed here from the weights.
std::vector<double> model_log_softmax(const std::string& prompt, int& best) {
  auto m = test::load_model(test::fixture("models/stories260k"));
  Tokenizer tok = Tokenizer::from_folder(test::fixture("models/stories260k"));
  std::vector<int> ids = tok.encode(prompt, true);
  std::vector<float> all = test::all_logits(*m.rt, ids);
  const size_t V = size_t(m.rt->n_vocab());
  const float* row = all.data() + (ids.size() - 1) * V;
  double mx = row[0], sum = 0;
  for (size_t i = 0; i < V; ++i) mx = std::max(mx, double(row[i]));
  for (size_t i = 0; i < V; ++i) sum += std::exp(double(row[i]) - mx);
  std::vector<double> out(V);
  best = 0;
  for (size_t i = 0; i < V; ++i) {
    out[i] = double(row[i]) - mx - std::log(sum);
    if (out[i] > out[size_t(best)]) best = int(i);
  }
  return out;
}

TEST(ServeLogprobs, GreedyTopOneIsTheModelsLogSoftmax) {
  int best = 0;
  std::vector<double> want = model_log_softmax("Once upon a time", best);
  TestServer s;
  auto r = s.post("/v1/completions",
                  {{"prompt", "Once upon a time"}, {"max_tokens", 4}, {"temperature", 0}, {"logprobs", 5}});
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = r.json()["choices"][0]["logprobs"];
  ASSERT_EQ(lp["tokens"].size(), 4u) << lp;
  EXPECT_EQ(lp["tokens"][0], s.tok().piece_text(best));
  EXPECT_NEAR(lp["token_logprobs"][0].get<double>(), want[size_t(best)], 1e-4);
  ASSERT_EQ(lp["top_logprobs"][0].size(), 5u);
  EXPECT_NEAR(lp["top_logprobs"][0][s.tok().piece_text(best)].get<double>(), want[size_t(best)], 1e-4);
  // The alternatives are the model's next four, in value order, each its log-softmax.
  std::vector<int> order(want.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = int(i);
  std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                    [&](int a, int b) { return want[size_t(a)] > want[size_t(b)]; });
  for (int k = 0; k < 5; ++k) {
    const std::string t = s.tok().piece_text(order[size_t(k)]);
    ASSERT_TRUE(lp["top_logprobs"][0].contains(t)) << t;
    EXPECT_NEAR(lp["top_logprobs"][0][t].get<double>(), want[size_t(order[size_t(k)])], 1e-4);
  }
  // text_offset counts characters of the text before each token.
  std::string text = r.json()["choices"][0]["text"];
  EXPECT_EQ(lp["text_offset"][0], 0);
  EXPECT_EQ(lp["text_offset"][1], s.tok().piece_text(best).size());
  std::string joined;
  for (const auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, text);
}

TEST(ServeLogprobs, ChatShapeAndStreamedChunks) {
  TestServer s;
  json chat = {{"messages", {{{"role", "user"}, {"content", "Tell me a story."}}}},
               {"max_tokens", 12},
               {"temperature", 0},
               {"logprobs", true},
               {"top_logprobs", 3}};
  auto r = s.post("/v1/chat/completions", chat);
  ASSERT_EQ(r.status, 200) << r.body;
  json content = r.json()["choices"][0]["logprobs"]["content"];
  ASSERT_EQ(content.size(), size_t(r.json()["usage"]["completion_tokens"].get<int>())) << r.body;
  for (const auto& c : content) {
    ASSERT_EQ(c["top_logprobs"].size(), 3u);
    EXPECT_EQ(c["top_logprobs"][0]["token"], c["token"]);  // greedy: the drawn token is the most likely
    EXPECT_NEAR(c["top_logprobs"][0]["logprob"].get<double>(), c["logprob"].get<double>(), 1e-6);
    EXPECT_GE(c["logprob"].get<double>(), c["top_logprobs"][1]["logprob"].get<double>());
    std::string bytes;
    for (const auto& b : c["bytes"]) bytes.push_back(char(b.get<int>()));
    EXPECT_EQ(bytes, c["token"].get<std::string>());
  }
  // Streamed, the chunks carry the same entries in order.
  chat["stream"] = true;
  auto st = s.post_stream("/v1/chat/completions", chat, [](const std::string&) { return true; });
  std::string err;
  auto events = test::parse_sse(st.body, err);
  ASSERT_EQ(err, "");
  json streamed = json::array();
  for (const auto& e : events) {
    if (e.data == "[DONE]") continue;
    json lp = json::parse(e.data)["choices"][0]["logprobs"];
    if (!lp.is_null())
      for (const auto& c : lp["content"]) streamed.push_back(c);
  }
  // (The second run reuses the cached prompt, so values may differ in the last float bits.)
  ASSERT_EQ(streamed.size(), content.size());
  for (size_t i = 0; i < content.size(); ++i) {
    EXPECT_EQ(streamed[i]["token"], content[i]["token"]);
    EXPECT_NEAR(streamed[i]["logprob"].get<double>(), content[i]["logprob"].get<double>(), 1e-4);
    EXPECT_EQ(streamed[i]["top_logprobs"].size(), 3u);
  }
  // Completions stream too.
  json comp = {{"prompt", "Once upon a time"}, {"max_tokens", 10}, {"temperature", 0}, {"logprobs", 2}};
  json whole = s.post("/v1/completions", comp).json()["choices"][0]["logprobs"];
  comp["stream"] = true;
  st = s.post_stream("/v1/completions", comp, [](const std::string&) { return true; });
  events = test::parse_sse(st.body, err);
  json tokens = json::array(), values = json::array(), offsets = json::array();
  for (const auto& e : events) {
    if (e.data == "[DONE]") continue;
    json lp = json::parse(e.data)["choices"][0]["logprobs"];
    if (lp.is_null()) continue;
    for (size_t i = 0; i < lp["tokens"].size(); ++i) {
      tokens.push_back(lp["tokens"][i]);
      values.push_back(lp["token_logprobs"][i]);
      offsets.push_back(lp["text_offset"][i]);
    }
  }
  EXPECT_EQ(tokens, whole["tokens"]);
  ASSERT_EQ(values.size(), whole["token_logprobs"].size());
  for (size_t i = 0; i < values.size(); ++i)
    EXPECT_NEAR(values[i].get<double>(), whole["token_logprobs"][i].get<double>(), 1e-4);
  EXPECT_EQ(offsets, whole["text_offset"]);
}

TEST(ServeLogprobs, KoboldLogprobsAndLastLogprobs) {
  TestServer s;
  json body = {{"prompt", "Once upon a time"},
               {"max_length", 8},
               {"temperature", 0.8},
               {"sampler_seed", 7},
               {"top_k", 40},
               {"logprobs", true},
               {"genkey", "KCPP4242"}};
  auto r = s.post("/api/v1/generate", body);
  ASSERT_EQ(r.status, 200) << r.body;
  json lp = r.json()["results"][0]["logprobs"];
  ASSERT_TRUE(lp.is_object()) << r.body;
  ASSERT_EQ(lp["content"].size(), 8u);
  for (const char* k : {"tokens", "token_ids", "token_logprobs", "top_logprobs", "text_offset"})
    EXPECT_EQ(lp[k].size(), 8u) << k;
  for (const auto& c : lp["content"]) {
    // The distribution the token was drawn from: top_k 40 leaves at most 40, shown at most 10.
    ASSERT_GE(c["top_logprobs"].size(), 1u);
    EXPECT_LE(c["top_logprobs"].size(), 10u);
    double prev = 0;
    for (const auto& t : c["top_logprobs"]) {
      EXPECT_LE(t["logprob"].get<double>(), prev + 1e-9);
      EXPECT_GE(t["logprob"].get<double>(), std::log(1e-4) - 1e-6);
      prev = t["logprob"].get<double>();
    }
  }
  std::string joined;
  for (const auto& t : lp["tokens"]) joined += t.get<std::string>();
  EXPECT_EQ(joined, r.json()["results"][0]["text"]);
  // Lite asks for them afterwards by genkey.
  auto last = s.post("/api/extra/last_logprobs", {{"genkey", "KCPP4242"}});
  ASSERT_EQ(last.status, 200);
  EXPECT_EQ(last.json()["logprobs"], lp);
  EXPECT_TRUE(s.post("/api/extra/last_logprobs", {{"genkey", "nobody"}}).json()["logprobs"].is_null());
  // Greedy: the only token left after the samplers has probability 1 (KoboldCpp reports the
  // distribution after sampling).
  body["temperature"] = 0;
  body["logprobs"] = 10;  // SillyTavern sends a count
  lp = s.post("/api/v1/generate", body).json()["results"][0]["logprobs"];
  for (const auto& v : lp["token_logprobs"]) EXPECT_EQ(v.get<double>(), 0.0);
  // Without logprobs, none are kept.
  body.erase("logprobs");
  EXPECT_TRUE(s.post("/api/v1/generate", body).json()["results"][0]["logprobs"].is_null());
  EXPECT_TRUE(s.post("/api/extra/last_logprobs", {{"genkey", "KCPP4242"}}).json()["logprobs"].is_null());
}

}  // namespace
}  // namespace metharme
