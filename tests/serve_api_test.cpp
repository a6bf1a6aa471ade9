// `metharme serve` over real HTTP on loopback: every KoboldAI United, KoboldCpp and OpenAI route,
// success and error paths, SSE framing, the web page.
#include <gtest/gtest.h>

#include <regex>

#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::TestServer;

std::string header(const TestServer::Reply& r, const std::string& key) {
  auto it = r.headers.find(key);
  return it == r.headers.end() ? std::string() : it->second;
}

// Greedy continuation from the engine directly: what every route must reproduce.
std::string direct_greedy(TestServer& s, const std::string& prompt, int n) {
  serve::GenSpec g;
  g.prompt = s.tok().encode(prompt, true);
  g.max_new = n;
  g.sampler.temperature = 0;
  auto j = s.engine().submit(g);
  while (!j->done()) j->wait(j->text().size(), std::chrono::milliseconds(20));
  return j->text();
}

TEST(ServeApi, InfoRoutesUnderBothPrefixes) {
  TestServer s;
  for (std::string pre : {"/api/v1", "/api/latest"}) {
    EXPECT_EQ(s.get(pre + "/model").json(), json({{"result", "koboldcpp/test-model"}}));
    EXPECT_EQ(s.get(pre + "/model/").json(), json({{"result", "koboldcpp/test-model"}}));
    EXPECT_EQ(s.get(pre + "/info/version").json()["result"], "1.2.5");
    EXPECT_EQ(s.get(pre + "/config/max_context_length").json(), json({{"value", 512}}));
    EXPECT_EQ(s.get(pre + "/config/max_length").json(), json({{"value", 180}}));
    EXPECT_EQ(s.get(pre + "/config/soft_prompt").json(), json({{"value", ""}}));
    EXPECT_EQ(s.get(pre + "/config/soft_prompts_list").json(), json({{"values", json::array()}}));
  }
  auto v = s.get("/api/extra/version").json();
  EXPECT_EQ(v["result"], "KoboldCpp");
  EXPECT_GE(v["version"].get<std::string>(), "1.49");
  EXPECT_EQ(v["protected"], false);
  EXPECT_EQ(s.get("/api/extra/true_max_context_length").json(), json({{"value", 512}}));
  EXPECT_EQ(s.get("/api/extra/preloadstory").json(), json::object());
  EXPECT_EQ(s.get("/sdapi/v1/sd-models").json(), json::array());
  auto perf = s.get("/api/extra/perf").json();
  for (const char* k : {"last_process", "last_eval", "last_token_count", "last_seed", "total_gens", "stop_reason",
                        "queue", "idle", "uptime", "idletime"})
    EXPECT_TRUE(perf.contains(k)) << k;
  EXPECT_EQ(perf["idle"], 1);
  auto models = s.get("/v1/models").json();
  EXPECT_EQ(models["object"], "list");
  EXPECT_EQ(models["data"][0]["id"], "test-model");
  EXPECT_EQ(s.get("/v1/models/test-model").json()["id"], "test-model");
  auto missing = s.get("/v1/models/other");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.json()["error"]["code"], "model_not_found");
  EXPECT_EQ(s.get("/health").json()["status"], "ok");
}

TEST(ServeApi, WebPageIsServedFromTheBinary) {
  TestServer s;
  auto page = s.get("/");
  EXPECT_EQ(page.status, 200);
  EXPECT_NE(page.content_type.find("text/html"), std::string::npos);
  EXPECT_NE(page.body.find("<script src=\"/app.js\">"), std::string::npos);
  auto js = s.get("/app.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_NE(js.content_type.find("javascript"), std::string::npos);
  EXPECT_NE(js.body.find("/v1/chat/completions"), std::string::npos);
  EXPECT_EQ(s.get("/style.css").status, 200);
  EXPECT_EQ(s.get("/index.html").body, page.body);
  auto nf = s.get("/nope.html");
  EXPECT_EQ(nf.status, 404);
  EXPECT_NE(nf.content_type.find("text/html"), std::string::npos);
}

TEST(ServeApi, KoboldGenerateReturnsOnlyTheNewText) {
  TestServer s;
  std::string want = direct_greedy(s, "Once upon a time", 30);
  auto r = s.post("/api/v1/generate", {{"prompt", "Once upon a time"}, {"max_length", 30}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  ASSERT_EQ(j["results"].size(), 1u);
  EXPECT_EQ(j["results"][0]["text"], want);
  EXPECT_EQ(j["results"][0]["finish_reason"], "length");
  // Unknown fields are ignored, KoboldCpp fields accepted, /api/latest works the same.
  r = s.post("/api/latest/generate/", {{"prompt", "Once upon a time"},
                                       {"max_length", 30},
                                       {"temperature", 0},
                                       {"no_such_field", {1, 2}},
                                       {"use_story", false},
                                       {"genkey", "KCPP0001"},
                                       {"min_p", 0.05},
                                       {"sampler_order", {0, 1, 2, 3, 4, 5}},
                                       {"n", 1},
                                       {"quiet", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["results"][0]["text"], want);
  // n results, one per seed.
  r = s.post("/api/v1/generate", {{"prompt", "Once"}, {"max_length", 8}, {"n", 3}, {"sampler_seed", 5}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["results"].size(), 3u);
  // Perf reports the last run.
  auto perf = s.get("/api/extra/perf").json();
  EXPECT_EQ(perf["last_token_count"], 8);
  EXPECT_GE(perf["total_gens"].get<int>(), 5);
}

TEST(ServeApi, KoboldStopSequencesAndTrimStop) {
  TestServer s;
  std::string full = direct_greedy(s, "Once upon a time", 40);
  size_t at = full.find("Lily");
  ASSERT_NE(at, std::string::npos);
  json body = {{"prompt", "Once upon a time"}, {"max_length", 40}, {"temperature", 0}, {"stop_sequence", {"Lily"}}};
  auto r = s.post("/api/v1/generate", body).json()["results"][0];
  EXPECT_EQ(r["text"], full.substr(0, at + 4));
  EXPECT_EQ(r["finish_reason"], "stop");
  body["trim_stop"] = true;
  EXPECT_EQ(s.post("/api/v1/generate", body).json()["results"][0]["text"], full.substr(0, at));
  // singleline cuts at the first newline; banned_tokens keeps a phrase out.
  body = {{"prompt", "Once upon a time"}, {"max_length", 40}, {"temperature", 0}, {"banned_tokens", {"little girl"}}};
  std::string text = s.post("/api/v1/generate", body).json()["results"][0]["text"];
  EXPECT_EQ(text.find("little girl"), std::string::npos) << text;
}

TEST(ServeApi, KoboldMemoryIsPinnedAndLongPromptsAreLeftTrimmed) {
  TestServer s;  // context 512
  std::string filler;
  for (int i = 0; i < 200; ++i) filler += " Tom ran.";
  auto r = s.post("/api/v1/generate", {{"prompt", filler + " Once upon a time"},
                                       {"memory", "Lily had a cat."},
                                       {"max_context_length", 4096},
                                       {"max_length", 12}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto perf = s.get("/api/extra/perf").json();
  EXPECT_EQ(perf["last_input_count"].get<int>(), 512 - 12);  // clamped to the server's context
  EXPECT_EQ(perf["last_token_count"], 12);
  // max_length leaving no room is the token_overflow error.
  r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_context_length", 100}, {"max_length", 100}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["detail"]["type"], "token_overflow");
  EXPECT_NE(r.json()["detail"]["msg"].get<std::string>().find("max_length"), std::string::npos);
}

TEST(ServeApi, KoboldValidationErrorsAre422ByField) {
  TestServer s;
  auto r = s.post("/api/v1/generate", {{"prompt", 5},
                                       {"temperature", -1},
                                       {"top_p", 1.5},
                                       {"max_length", "ten"},
                                       {"rep_pen", 0.5},
                                       {"sampler_order", {0, 1, 2}},
                                       {"n", 9},
                                       {"stop_sequence", "not a list"},
                                       {"use_default_badwordsids", "yes"},
                                       {"mirostat", 3},
                                       {"grammar", "root ::= \"a\""}});
  ASSERT_EQ(r.status, 422) << r.body;
  auto d = r.json()["detail"];
  EXPECT_EQ(d["prompt"][0], "Not a valid string.");
  EXPECT_EQ(d["max_length"][0], "Not a valid integer.");
  EXPECT_EQ(d["use_default_badwordsids"][0], "Not a valid boolean.");
  EXPECT_EQ(d["stop_sequence"][0], "Not a valid list.");
  for (const char* f : {"temperature", "top_p", "rep_pen", "sampler_order", "n", "mirostat", "grammar"})
    EXPECT_TRUE(d.contains(f)) << f;
  // Unsupported samplers at their neutral values are fine (what SillyTavern sends by default).
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}, {"mirostat", 0}, {"grammar", ""},
                                        {"dry_multiplier", 0}, {"xtc_probability", 0}})
                .status,
            200);
  r = s.post("/api/v1/generate", json::object());
  EXPECT_EQ(r.status, 422);
  EXPECT_EQ(r.json()["detail"]["prompt"][0], "Missing data for required field.");
  r = s.post("/api/v1/generate", json::array({1, 2}));
  EXPECT_EQ(r.status, 422);
  r = s.post_raw("/api/v1/generate", "{\"prompt\": \"unterminated");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["detail"]["type"], "bad_input");
  EXPECT_NE(r.json()["detail"]["msg"].get<std::string>().find("Malformed JSON"), std::string::npos);
  // The server is still fine.
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}}).status, 200);
}

TEST(ServeApi, UnknownRoutesMethodsAndHugeBodies) {
  TestServer s;
  auto r = s.get("/api/v1/nothing");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.json()["detail"]["type"], "generic.error_404");
  r = s.get("/api/v1/generate");
  EXPECT_EQ(r.status, 405);
  EXPECT_EQ(r.json()["detail"]["type"], "generic.error_405");
  EXPECT_EQ(header(r, "Allow"), std::string("POST"));
  r = s.post("/v1/models", json::object());
  EXPECT_EQ(r.status, 405);
  EXPECT_TRUE(r.json().contains("error"));
  std::string huge = "{\"prompt\": \"" + std::string(2u << 20, 'a') + "\"}";
  r = s.post_raw("/api/v1/generate", huge);
  EXPECT_EQ(r.status, 413) << r.body.substr(0, 200);
  EXPECT_NE(r.json()["detail"]["msg"].get<std::string>().find("too large"), std::string::npos);
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}}).status, 200);
}

TEST(ServeApi, SseStreamFramingMatchesKoboldCpp) {
  TestServer s;
  std::string want = direct_greedy(s, "Once upon a time", 25);
  auto r = s.post_stream("/api/extra/generate/stream", {{"prompt", "Once upon a time"}, {"max_length", 25}, {"temperature", 0}},
                         [](const std::string&) { return true; });
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.content_type, "text/event-stream");
  EXPECT_EQ(header(r, "Cache-Control"), std::string("no-cache"));
  // Lite's parser: ^event: (.*)\ndata: (.*)\n\n, repeated to the end.
  std::regex ev("event: message\ndata: (\\{[^\n]*\\})\n\n");
  std::string rest = r.body, text;
  std::smatch m;
  std::vector<json> events;
  while (std::regex_search(rest, m, ev, std::regex_constants::match_continuous)) {
    events.push_back(json::parse(m[1].str()));
    rest = m.suffix();
  }
  EXPECT_EQ(rest, "") << "bytes outside the event framing";
  ASSERT_GE(events.size(), 2u);
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i]["finish_reason"], "null");  // a string while running
    text += events[i]["token"].get<std::string>();
  }
  EXPECT_EQ(events.back()["finish_reason"], "length");
  text += events.back()["token"].get<std::string>();
  EXPECT_EQ(text, want);
}

TEST(ServeApi, TokenCountTokenizeAndDetokenize) {
  test::ServerSetup ss;
  ss.model = "models/llama-rand-h256-gqa";
  TestServer s(ss);
  std::string text = "<|user|>Hello, world!<|model|>";
  auto ids = s.tok().encode(text, true);
  auto r = s.post("/api/extra/tokencount", {{"prompt", text}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.json()["value"], ids.size());
  EXPECT_EQ(r.json()["ids"].get<std::vector<int>>(), ids);
  r = s.post("/api/extra/tokencount", {{"prompt", text}, {"special", false}});
  EXPECT_EQ(r.json()["value"], ids.size() - 1);
  r = s.post("/api/extra/tokencount", {{"prompt", 3}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["value"], -1);
  r = s.post("/api/extra/detokenize", {{"ids", std::vector<int>(ids.begin() + 1, ids.end())}});
  EXPECT_EQ(r.json()["result"], text);
  EXPECT_EQ(s.post("/api/extra/detokenize", {{"ids", {99999}}}).status, 400);
}

TEST(ServeApi, OpenAICompletionsAndChat) {
  TestServer s;
  std::string want = direct_greedy(s, "Once upon a time", 20);
  auto r = s.post("/v1/completions", {{"model", "x"}, {"prompt", "Once upon a time"}, {"max_tokens", 20}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  EXPECT_EQ(j["object"], "text_completion");
  EXPECT_EQ(j["choices"][0]["text"], want);
  EXPECT_EQ(j["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(j["usage"]["prompt_tokens"], s.tok().encode("Once upon a time", true).size());
  EXPECT_EQ(j["usage"]["completion_tokens"], 20);
  EXPECT_EQ(j["usage"]["total_tokens"], j["usage"]["prompt_tokens"].get<int>() + 20);
  // A stop string is left out of the text (OpenAI semantics).
  size_t at = want.find("Lily");
  ASSERT_NE(at, std::string::npos);
  r = s.post("/v1/completions", {{"prompt", "Once upon a time"}, {"max_tokens", 20}, {"temperature", 0}, {"stop", "Lily"}});
  EXPECT_EQ(r.json()["choices"][0]["text"], want.substr(0, at));
  EXPECT_EQ(r.json()["choices"][0]["finish_reason"], "stop");
  // Streaming: data-only events, the same text, [DONE] last.
  auto st = s.post_stream("/v1/completions",
                          {{"prompt", "Once upon a time"}, {"max_tokens", 20}, {"temperature", 0}, {"stream", true},
                           {"stream_options", {{"include_usage", true}}}},
                          [](const std::string&) { return true; });
  std::string err;
  auto events = test::parse_sse(st.body, err);
  ASSERT_EQ(err, "");
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back().data, "[DONE]");
  std::string text;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    EXPECT_EQ(events[i].event, "");
    auto c = json::parse(events[i].data);
    if (c["choices"].empty()) {
      EXPECT_EQ(c["usage"]["completion_tokens"], 20);
      continue;
    }
    text += c["choices"][0]["text"].get<std::string>();
  }
  EXPECT_EQ(text, want);
  // Chat: the Metharme format; the reply's leading space is dropped.
  json chat = {{"messages", {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}}},
               {"max_tokens", 12},
               {"temperature", 0}};
  r = s.post("/v1/chat/completions", chat);
  ASSERT_EQ(r.status, 200) << r.body;
  j = r.json();
  EXPECT_EQ(j["object"], "chat.completion");
  EXPECT_EQ(j["choices"][0]["message"]["role"], "assistant");
  std::string reply = direct_greedy(s, "<|system|>Be brief.<|user|>Hi<|model|>", 12);
  size_t cut = reply.find_first_not_of(' ');
  EXPECT_EQ(j["choices"][0]["message"]["content"], reply.substr(cut == std::string::npos ? reply.size() : cut));
  EXPECT_EQ(j["usage"]["prompt_tokens"], s.tok().encode("<|system|>Be brief.<|user|>Hi<|model|>", true).size());
  chat["stream"] = true;
  st = s.post_stream("/v1/chat/completions", chat, [](const std::string&) { return true; });
  events = test::parse_sse(st.body, err);
  ASSERT_EQ(err, "");
  EXPECT_EQ(json::parse(events[0].data)["choices"][0]["delta"]["role"], "assistant");
  EXPECT_EQ(events.back().data, "[DONE]");
  text.clear();
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    auto c = json::parse(events[i].data);
    EXPECT_EQ(c["object"], "chat.completion.chunk");
    text += c["choices"][0]["delta"].value("content", "");
  }
  EXPECT_EQ(text, j["choices"][0]["message"]["content"]);
}

TEST(ServeApi, OpenAIErrors) {
  TestServer s;
  auto r = s.post("/v1/chat/completions", {{"messages", "hi"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["param"], "messages");
  r = s.post("/v1/chat/completions", {{"messages", {{{"role", "wizard"}, {"content", "x"}}}}});
  EXPECT_EQ(r.status, 400);
  r = s.post("/v1/completions", {{"prompt", "Hi"}, {"temperature", "hot"}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["param"], "temperature");
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += " Tom ran.";
  r = s.post("/v1/completions", {{"prompt", long_prompt}, {"max_tokens", 10}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["code"], "context_length_exceeded");
  r = s.post_raw("/v1/completions", "not json");
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["type"], "invalid_request_error");
  EXPECT_EQ(s.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}}).status, 200);
}

TEST(ServeApi, WithoutAModelGeneratingRoutesAnswer501) {
  test::ServerSetup ss;
  ss.attach = false;
  TestServer s(ss);
  EXPECT_EQ(s.get("/api/v1/model").json()["result"], "ReadOnly");
  auto r = s.post("/api/v1/generate", {{"prompt", "Hi"}});
  EXPECT_EQ(r.status, 501);
  EXPECT_EQ(r.json()["detail"]["type"], "not_implemented");
  EXPECT_EQ(s.post("/v1/completions", {{"prompt", "Hi"}}).status, 501);
  EXPECT_EQ(s.get("/health").status, 503);
}

TEST(ServeApi, CorsOnlyForAllowedOrigins) {
  test::ServerSetup ss;
  ss.cors = {"https://lite.koboldai.net"};
  TestServer s(ss);
  auto r = s.get("/api/v1/model", {{"Origin", "https://lite.koboldai.net"}});
  EXPECT_EQ(header(r, "Access-Control-Allow-Origin"),
            std::string("https://lite.koboldai.net"));
  r = s.get("/api/v1/model", {{"Origin", "https://evil.example"}});
  EXPECT_EQ(header(r, "Access-Control-Allow-Origin"), "");
  auto c = s.client();
  auto opt = c.Options("/api/v1/generate", {{"Origin", "https://lite.koboldai.net"},
                                            {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->status, 204);
  EXPECT_NE(opt->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
}

}  // namespace
}  // namespace metharme
