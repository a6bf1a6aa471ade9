// Fitting requests into the context as KoboldCpp does (serve/context_fit.h): the clamp rules
// with hand-computed values, the prompt cuts, the chat sliding window, and the same over HTTP on
// every generating route. Also CORS preflights and bodiless POSTs over plain HTTP.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>

#include "serve/context_fit.h"
#include "serve/placeholders.h"
#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using serve::clamp_max_length;
using serve::cut_front;
using test::TestServer;

std::string header(const TestServer::Reply& r, const std::string& key) {
  auto it = r.headers.find(key);
  return it == r.headers.end() ? std::string() : it->second;
}

TEST(ContextFit, KoboldCppMaxLengthClamp) {
  // min_remain = min(ctx - 4, 16); max_length >= ctx - min_remain becomes ctx - min_remain.
  EXPECT_EQ(clamp_max_length(1536, 512), 496);  // fresh Lite on a 512 model
  EXPECT_EQ(clamp_max_length(495, 512), 495);   // just below: unchanged
  EXPECT_EQ(clamp_max_length(496, 512), 496);
  EXPECT_EQ(clamp_max_length(350, 2048), 350);  // SillyTavern's 350 fits as it is
  EXPECT_EQ(clamp_max_length(4000, 2048), 2032);
  EXPECT_EQ(clamp_max_length(100, 100), 84);
  EXPECT_EQ(clamp_max_length(50, 10), 4);  // min_remain 6
  EXPECT_EQ(clamp_max_length(9, 5), 4);    // min_remain 1: one prompt token (BOS) left
  EXPECT_TRUE(serve::reply_fits(4, 5));
  EXPECT_EQ(clamp_max_length(9, 4), 4);  // min_remain 0: no room at all
  EXPECT_FALSE(serve::reply_fits(4, 4));
  EXPECT_EQ(clamp_max_length(2, 3), 2);  // min_remain -1: 2 < 4 is kept
  EXPECT_TRUE(serve::reply_fits(2, 3));
}

TEST(ContextFit, RequestedContextTakesTheSmallestAndClampsToTheServer) {
  auto ctx_of = [](const json& body) {
    serve::FieldErrors errs;
    serve::FieldReader r(body, errs);
    int ctx = serve::requested_context(r, 2048);
    EXPECT_TRUE(errs.empty()) << errs.first();
    return ctx;
  };
  EXPECT_EQ(ctx_of(json::object()), 2048);
  EXPECT_EQ(ctx_of({{"max_context_length", 12288}}), 2048);
  EXPECT_EQ(ctx_of({{"truncation_length", 8192}, {"num_ctx", 8192}}), 2048);
  EXPECT_EQ(ctx_of({{"truncation_length", 1024}}), 1024);
  EXPECT_EQ(ctx_of({{"num_ctx", 700}, {"max_context_length", 900}}), 700);
  serve::FieldErrors errs;
  json bad = {{"num_ctx", 0}};
  serve::FieldReader r(bad, errs);
  serve::requested_context(r, 2048);
  EXPECT_EQ(errs.fields.count("num_ctx"), 1u);
}

TEST(ContextFit, CutFrontKeepsBos) {
  std::vector<int> ids = {1, 10, 11, 12, 13, 14};
  EXPECT_EQ(cut_front(ids, 4, 1), 2);
  EXPECT_EQ(ids, (std::vector<int>{1, 12, 13, 14}));
  EXPECT_EQ(cut_front(ids, 4, 1), 0);
  EXPECT_EQ(cut_front(ids, 1, 1), 3);
  EXPECT_EQ(ids, (std::vector<int>{1}));
  std::vector<int> no_bos = {10, 11, 12};  // token-id prompts may lack BOS
  EXPECT_EQ(cut_front(no_bos, 2, 1), 1);
  EXPECT_EQ(no_bos, (std::vector<int>{11, 12}));
}

class ChatFitTest : public ::testing::Test {
 protected:
  Tokenizer tok = Tokenizer::from_folder(test::fixture("models/stories260k"));
  std::vector<Message> chat(int turns) const {
    std::vector<Message> m = {{Role::kSystem, "Be kind."}, {Role::kModel, "Hello there, friend."}};
    for (int i = 0; i < turns; ++i) {
      m.push_back({Role::kUser, "Tell me about turn " + std::to_string(i) + " of the tale."});
      m.push_back({Role::kModel, "It was a long day for the fox, number " + std::to_string(i) + "."});
    }
    m.push_back({Role::kUser, "And then?"});
    return m;
  }
  std::vector<int> render(const std::vector<Message>& m) const { return tok.encode(render_messages(m, true), true); }
};

TEST_F(ChatFitTest, FitsWholeWhenThereIsRoom) {
  auto msgs = chat(2);
  auto f = serve::fit_chat(tok, msgs, true, 4096);
  EXPECT_EQ(f.ids, render(msgs));
  EXPECT_EQ(f.messages_dropped, 0);
  EXPECT_EQ(f.tokens_cut, 0);
  EXPECT_EQ(f.full_tokens, int(f.ids.size()));
}

TEST_F(ChatFitTest, DropsOldestTurnsKeepingSystemAndLast) {
  auto msgs = chat(30);
  const int whole = int(render(msgs).size());
  const int room = whole / 3;
  auto f = serve::fit_chat(tok, msgs, true, room);
  ASSERT_LE(int(f.ids.size()), room);
  ASSERT_GT(f.messages_dropped, 0);
  // What was kept is exactly: the system message, then the messages after the dropped ones.
  std::vector<Message> kept = {msgs[0]};
  kept.insert(kept.end(), msgs.begin() + 1 + f.messages_dropped, msgs.end());
  EXPECT_EQ(f.ids, render(kept));
  EXPECT_EQ(kept[1].role, Role::kUser);  // a window never starts at a model reply
  // The window is the widest that fits: one more user/model pair would not.
  std::vector<Message> wider = {msgs[0]};
  wider.insert(wider.end(), msgs.begin() + 1 + f.messages_dropped - 2, msgs.end());
  EXPECT_GT(int(render(wider).size()), room);
  EXPECT_EQ(f.tokens_cut, whole - int(f.ids.size()));
}

TEST_F(ChatFitTest, CutsTheFrontWhenTheLastMessageAloneIsTooLong) {
  auto msgs = chat(3);
  std::string longer;
  for (int i = 0; i < 60; ++i) longer += "The fox ran to the river. ";
  msgs.back().text = longer;
  auto f = serve::fit_chat(tok, msgs, true, 40);
  ASSERT_EQ(f.ids.size(), 40u);
  EXPECT_EQ(f.ids[0], tok.bos());
  EXPECT_EQ(f.messages_dropped, int(msgs.size()) - 2);  // all but the system and last message
  // The kept tokens are the tail of system + last message, after BOS.
  auto tail = render({msgs[0], msgs.back()});
  EXPECT_TRUE(std::equal(f.ids.begin() + 1, f.ids.end(), tail.end() - 39));
  EXPECT_EQ(f.tokens_cut, f.full_tokens - 40);
}

// --- Over HTTP ---

TEST(ServeContext, KoboldMaxLengthIsClampedNotRefused) {
  TestServer s;  // context 512
  auto r = s.post("/api/v1/generate", {{"prompt", "Once upon a time"},
                                       {"max_context_length", 12288},
                                       {"max_length", 1536},
                                       {"temperature", 0},
                                       {"bypass_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto perf = s.get("/api/extra/perf").json();
  EXPECT_EQ(perf["last_token_count"], 496);
  EXPECT_EQ(perf["last_prompt_tokens_cut"], 0);
  EXPECT_EQ(header(r, "X-Prompt-Tokens-Cut"), "0");
  // max_context_length 100, max_length 100: KoboldCpp generates 84 after a 16-token prompt.
  std::string filler;
  for (int i = 0; i < 40; ++i) filler += " Tom ran.";
  const int whole = int(s.tok().encode(filler, true).size());
  r = s.post("/api/v1/generate",
             {{"prompt", filler}, {"max_context_length", 100}, {"max_length", 100}, {"bypass_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  perf = s.get("/api/extra/perf").json();
  EXPECT_EQ(perf["last_input_count"], 16);
  EXPECT_EQ(perf["last_token_count"], 84);
  EXPECT_EQ(perf["last_prompt_tokens_cut"], whole - 16);
  EXPECT_EQ(r.json()["prompt_tokens_cut"], whole - 16);
  // Only a context that leaves no prompt token is refused.
  r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_context_length", 4}, {"max_length", 8}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["detail"]["type"], "token_overflow");
}

TEST(ServeContext, KoboldMemoryStaysWhileThePromptFrontIsCut) {
  TestServer s;
  std::string filler;
  for (int i = 0; i < 200; ++i) filler += " Tom ran.";
  const std::string memory = "Lily had a cat.";
  const int mem = int(s.tok().encode(memory, true).size());
  const int body = int(s.tok().encode(filler + " Once upon a time", false).size());
  auto r = s.post_stream("/api/extra/generate/stream",
                         {{"prompt", filler + " Once upon a time"},
                          {"memory", memory},
                          {"max_context_length", 300},
                          {"max_length", 40},
                          {"temperature", 0}},
                         [](const std::string&) { return true; });
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(header(r, "X-Prompt-Tokens-Cut"), std::to_string(mem + body - 260));
  auto perf = s.get("/api/extra/perf").json();
  EXPECT_EQ(perf["last_input_count"], 260);
  EXPECT_EQ(perf["last_prompt_tokens_cut"], mem + body - 260);
}

TEST(ServeContext, OpenAICompletionsCutThePromptFront) {
  TestServer s;
  std::string long_prompt;
  for (int i = 0; i < 300; ++i) long_prompt += " Tom ran.";
  const int whole = int(s.tok().encode(long_prompt, true).size());
  ASSERT_GT(whole, 512);
  auto r = s.post("/v1/completions", {{"prompt", long_prompt}, {"max_tokens", 10}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  EXPECT_EQ(j["usage"]["prompt_tokens"], 502);
  EXPECT_EQ(j["prompt_tokens_cut"], whole - 502);
  EXPECT_EQ(header(r, "X-Prompt-Tokens-Cut"), std::to_string(whole - 502));
  // The reply is the greedy continuation of exactly the kept tokens.
  auto ids = s.tok().encode(long_prompt, true);
  std::vector<int> kept = {ids[0]};
  kept.insert(kept.end(), ids.end() - 501, ids.end());
  serve::GenSpec g;
  g.prompt = kept;
  g.max_new = 10;
  g.sampler.temperature = 0;
  auto job = s.engine().submit(g);
  while (!job->done()) job->wait(job->text().size(), std::chrono::milliseconds(20));
  EXPECT_EQ(j["choices"][0]["text"], job->text());
  // truncation_length / num_ctx below the server's context limit the window further.
  r = s.post("/v1/completions",
             {{"prompt", long_prompt}, {"max_tokens", 10}, {"truncation_length", 200}, {"num_ctx", 8192}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["usage"]["prompt_tokens"], 190);
  // max_tokens past the context is clamped; only a context under 5 tokens is refused.
  r = s.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 5000}, {"bypass_eos", true}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["usage"]["completion_tokens"], 496);
  r = s.post("/v1/completions", {{"prompt", "Hi"}, {"num_ctx", 4}});
  EXPECT_EQ(r.status, 400);
  EXPECT_EQ(r.json()["error"]["code"], "context_length_exceeded");
}

TEST(ServeContext, ChatCompletionsDropWholeOldMessages) {
  TestServer s;
  json msgs = json::array({{{"role", "system"}, {"content", "You are a fox."}}});
  for (int i = 0; i < 40; ++i) {
    msgs.push_back({{"role", "user"}, {"content", "Where did you go on day " + std::to_string(i) + "?"}});
    msgs.push_back({{"role", "assistant"}, {"content", "I went to the river and back again."}});
  }
  msgs.push_back({{"role", "user"}, {"content", "And today?"}});
  auto r = s.post("/v1/chat/completions", {{"messages", msgs}, {"max_tokens", 100}, {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  auto j = r.json();
  const int dropped = j["messages_dropped"];
  ASSERT_GT(dropped, 0);
  EXPECT_EQ(dropped % 2, 0);  // whole user/assistant pairs
  std::vector<Message> kept = {{Role::kSystem, "You are a fox."}};
  for (size_t i = 1 + size_t(dropped); i < msgs.size(); ++i)
    kept.push_back({*parse_role(msgs[i]["role"].get<std::string>()), msgs[i]["content"].get<std::string>()});
  const int prompt = int(s.tok().encode(render_messages(kept, true), true).size());
  EXPECT_EQ(j["usage"]["prompt_tokens"], prompt);
  EXPECT_LE(prompt, 412);
  EXPECT_EQ(header(r, "X-Prompt-Messages-Dropped"), std::to_string(dropped));
}

// --- Instruct placeholders (serve/placeholders.h) ---

TEST(Placeholders, FilledWithMetharmeMarkers) {
  EXPECT_EQ(serve::fill_instruct_placeholders("{{[SYSTEM]}}Be kind.{{[SYSTEM_END]}}{{[INPUT]}}\nHi\n{{[INPUT_END]}}"
                                              "{{[OUTPUT]}}Hello{{[OUTPUT_END]}}{{[INPUT]}}Bye{{[OUTPUT]}}"),
            "<|system|>Be kind.<|user|>\nHi\n<|model|>Hello<|user|>Bye<|model|>");
  EXPECT_EQ(serve::fill_instruct_placeholders("{{[NOPE]}} {{[INPUT] {{"), "{{[NOPE]}} {{[INPUT] {{");
  EXPECT_EQ(
      serve::fill_placeholder_stops({"{{[INPUT]}}", "{{[OUTPUT]}}", "{{[OUTPUT_END]}}", "\nUser:", "a{{[INPUT]}}"}),
      (std::vector<std::string>{"<|user|>", "<|model|>", "\nUser:", "a{{[INPUT]}}"}));
}

TEST(Placeholders, KoboldAndCompletionsRoutesFillThem) {
  TestServer s;
  auto greedy = [&](const std::vector<int>& ids, int n) {
    serve::GenSpec g;
    g.prompt = ids;
    g.max_new = n;
    g.sampler.temperature = 0;
    auto j = s.engine().submit(g);
    while (!j->done()) j->wait(j->text().size(), std::chrono::milliseconds(20));
    return j->text();
  };
  // Kobold: memory (with BOS) and prompt are tokenized apart, as before the fill.
  std::vector<int> ids = s.tok().encode("<|system|>A tale.", true);
  for (int id : s.tok().encode("<|user|>Tell me about Lily.<|model|>", false)) ids.push_back(id);
  const std::string want = greedy(ids, 20);
  json body = {{"prompt", "{{[INPUT]}}Tell me about Lily.{{[OUTPUT]}}"},
               {"memory", "{{[SYSTEM]}}A tale.{{[SYSTEM_END]}}"},
               {"max_length", 20},
               {"temperature", 0},
               {"stop_sequence", {"{{[INPUT]}}", "{{[OUTPUT]}}"}},
               {"replace_instruct_placeholders", true}};
  auto r = s.post("/api/v1/generate", body);
  ASSERT_EQ(r.status, 200) << r.body;
  // Stops are the markers now: the reply ends where the model writes one (kept, no trim_stop).
  size_t end = std::min(want.find("<|user|>"), want.find("<|model|>"));
  if (end != std::string::npos) end += want.compare(end, 8, "<|user|>") == 0 ? 8 : 9;
  EXPECT_EQ(r.json()["results"][0]["text"], want.substr(0, end));
  EXPECT_EQ(s.get("/api/extra/perf").json()["last_input_count"], ids.size());
  // KoboldCpp fills them by default; false keeps the text as sent.
  body.erase("replace_instruct_placeholders");
  ASSERT_EQ(s.post("/api/v1/generate", body).status, 200);
  EXPECT_EQ(s.get("/api/extra/perf").json()["last_input_count"], ids.size());
  body["replace_instruct_placeholders"] = false;
  ASSERT_EQ(s.post("/api/v1/generate", body).status, 200);
  EXPECT_GT(s.get("/api/extra/perf").json()["last_input_count"].get<size_t>(), ids.size());
  // /v1/completions: one prompt string, filled, gives the greedy text of the Metharme prompt.
  const auto whole = s.tok().encode("<|system|>A tale.<|user|>Tell me about Lily.<|model|>", true);
  r = s.post("/v1/completions", {{"prompt", "{{[SYSTEM]}}A tale.{{[INPUT]}}Tell me about Lily.{{[OUTPUT]}}"},
                                 {"max_tokens", 20},
                                 {"temperature", 0}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json()["usage"]["prompt_tokens"], whole.size());
  EXPECT_EQ(r.json()["choices"][0]["text"], greedy(whole, 20));
}

// --- CORS and bodiless requests ---

TEST(ServeCors, PreflightEchoesRequestedHeadersAndPrivateNetwork) {
  test::ServerSetup ss;
  ss.cors = {"http://127.0.0.1:9999"};
  TestServer s(ss);
  auto c = s.client();
  const std::string asked =
      "authorization, content-type, x-stainless-os, x-stainless-lang, http-referer, x-title, "
      "cache-control";
  auto opt = c.Options("/v1/chat/completions", {{"Origin", "http://127.0.0.1:9999"},
                                                {"Access-Control-Request-Method", "POST"},
                                                {"Access-Control-Request-Headers", asked},
                                                {"Access-Control-Request-Private-Network", "true"}});
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->status, 204);
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Origin"), "http://127.0.0.1:9999");
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Headers"), asked);
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Private-Network"), "true");
  EXPECT_NE(opt->get_header_value("Access-Control-Allow-Methods").find("POST"), std::string::npos);
  // Without a header list: a wildcard plus the headers the APIs read; no private-network grant.
  opt = c.Options("/api/v1/generate", {{"Origin", "http://127.0.0.1:9999"}, {"Access-Control-Request-Method", "POST"}});
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Headers").substr(0, 1), "*");
  EXPECT_NE(opt->get_header_value("Access-Control-Allow-Headers").find("Authorization"), std::string::npos);
  EXPECT_FALSE(opt->has_header("Access-Control-Allow-Private-Network"));
  // A list that is not plain header names is not echoed.
  opt = c.Options("/v1/completions", {{"Origin", "http://127.0.0.1:9999"},
                                      {"Access-Control-Request-Method", "POST"},
                                      {"Access-Control-Request-Headers", "x-a\"<script>"}});
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Headers").find("script"), std::string::npos);
  // Another origin gets nothing, preflight or not.
  opt = c.Options("/v1/completions", {{"Origin", "http://127.0.0.1:9998"},
                                      {"Access-Control-Request-Method", "POST"},
                                      {"Access-Control-Request-Headers", asked},
                                      {"Access-Control-Request-Private-Network", "true"}});
  ASSERT_TRUE(opt);
  EXPECT_FALSE(opt->has_header("Access-Control-Allow-Origin"));
  EXPECT_FALSE(opt->has_header("Access-Control-Allow-Private-Network"));
  // The actual request: allowed origin, fit headers exposed to the page.
  auto r = s.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}}, {{"Origin", "http://127.0.0.1:9999"}});
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(header(r, "Access-Control-Allow-Origin"), "http://127.0.0.1:9999");
  EXPECT_NE(header(r, "Access-Control-Expose-Headers").find("X-Prompt-Tokens-Cut"), std::string::npos);
}

TEST(ServeCors, WildcardOriginAnswersAnyOrigin) {
  test::ServerSetup ss;
  ss.cors = {"*"};
  TestServer s(ss);
  auto c = s.client();
  auto opt = c.Options("/api/extra/generate/stream", {{"Origin", "https://lite.koboldai.net"},
                                                      {"Access-Control-Request-Method", "POST"},
                                                      {"Access-Control-Request-Headers", "content-type,apikey"}});
  ASSERT_TRUE(opt);
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Origin"), "*");
  EXPECT_EQ(opt->get_header_value("Access-Control-Allow-Headers"), "content-type,apikey");
}

// Sends raw bytes and returns the whole answer (the server closes: "Connection: close").
std::string raw_http(int port, const std::string& request) {
  const int fd = test::connect_loopback(port, 30);
  if (fd < 0) return "";
  (void)!write(fd, request.data(), request.size());
  std::string out;
  char buf[4096];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, size_t(n));
  close(fd);
  return out;
}

TEST(ServeCors, PostWithoutContentLengthIsAnEmptyBody) {
  TestServer s;
  auto t0 = std::chrono::steady_clock::now();
  std::string a = raw_http(s.port(), "POST /api/extra/abort HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(a.rfind("HTTP/1.1 200", 0), 0u) << a;
  EXPECT_NE(a.find("\"success\":\"false\""), std::string::npos) << a;
  EXPECT_LT(secs, 5.0);  // not the read timeout
  // An empty body where one is required is that route's own error, at once.
  t0 = std::chrono::steady_clock::now();
  a = raw_http(s.port(), "POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(a.rfind("HTTP/1.1 422", 0), 0u) << a;
  EXPECT_NE(a.find("prompt"), std::string::npos) << a;
  EXPECT_LT(secs, 5.0);
  // Content-Length: 0 is the same empty body.
  a = raw_http(s.port(), "POST /api/extra/abort HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
  EXPECT_EQ(a.rfind("HTTP/1.1 200", 0), 0u) << a;
}

}  // namespace
}  // namespace metharme
