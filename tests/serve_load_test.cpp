// `metharme serve` with many users: concurrent requests, the queue bound, abort and disconnects,
// the API key, shutdown with requests running. Real HTTP on loopback.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::TestServer;

// A model whose random weights rarely pick EOS: generation runs as long as asked.
test::ServerSetup long_runs(int n_seq, int queue) {
  test::ServerSetup s;
  s.model = "models/llama-rand-h256";
  s.n_seq = n_seq;
  s.queue = queue;
  s.ctx = 2048;
  return s;
}

json endless(const std::string& prompt) {
  return {{"prompt", prompt}, {"max_length", 1500}, {"bypass_eos", true}, {"max_context_length", 2048}};
}

// Polls /api/extra/perf until `running` and `queue` are 0 (or the time runs out).
bool wait_idle(const TestServer& s, int ms = 10000) {
  for (int i = 0; i < ms / 20; ++i) {
    auto p = s.get("/api/extra/perf").json();
    if (p["running"] == 0 && p["queue"] == 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return false;
}

TEST(ServeLoad, EightConcurrentSeededRequestsEqualOneAtATime) {
  test::ServerSetup ss;
  ss.n_seq = 8;
  TestServer s(ss);
  const char* prompts[] = {"Once upon a time", "The little bird", "Tom and his dog", "Lily saw a",
                           "Sara had a red ball.", "Mom said,", "The sun was shining", "Ben wanted to"};
  auto body = [&](int i) {
    return json{{"prompt", prompts[i]}, {"max_length", 48}, {"temperature", 0.8}, {"top_k", 0}, {"top_p", 1},
                {"sampler_seed", 42 + i}};
  };
  std::vector<std::string> together(8);
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  for (int i = 0; i < 8; ++i)
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < 8) std::this_thread::yield();
      auto r = s.post(i % 2 ? "/api/v1/generate" : "/api/latest/generate", body(i));
      together[size_t(i)] = r.status == 200 ? r.json()["results"][0]["text"].get<std::string>() : "HTTP " + r.body;
    });
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) {
    auto r = s.post("/api/v1/generate", body(i));
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.json()["results"][0]["text"], together[size_t(i)]) << "request " << i;
    EXPECT_FALSE(together[size_t(i)].empty());
  }
  // And the texts differ between prompts: the slots did not leak into each other.
  EXPECT_NE(together[0], together[1]);
}

TEST(ServeLoad, FullQueueAnswers503WithTheKoboldBody) {
  TestServer s(long_runs(1, 0));
  std::atomic<bool> started{false}, hang_up{false};
  std::thread holder([&] {
    s.post_stream("/api/extra/generate/stream", endless("Hello"), [&](const std::string& got) {
      if (!got.empty()) started = true;
      return !hang_up.load();
    });
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 4}});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.json(), json({{"detail", {{"msg", "Server is busy; please try again later."}, {"type", "service_unavailable"}}}}));
  r = s.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 4}});
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.json()["detail"]["type"], "service_unavailable");
  EXPECT_TRUE(r.json().contains("error"));
  hang_up = true;  // the client leaves: its slot is freed at once
  holder.join();
  EXPECT_TRUE(wait_idle(s));
  r = s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 4}});
  EXPECT_EQ(r.status, 200) << r.body;
}

TEST(ServeLoad, AbortMidStreamThenKeepServing) {
  TestServer s(long_runs(2, 4));
  json body = endless("Tell me a story");
  body["genkey"] = "KCPP4242";
  std::atomic<bool> aborted{false};
  std::string check_text;
  auto r = s.post_stream("/api/extra/generate/stream", body, [&](const std::string& got) {
    if (!aborted && got.size() > 200) {
      aborted = true;
      // Another client reads the partial text, then stops the request by its key.
      auto c = s.post("/api/extra/generate/check", {{"genkey", "KCPP4242"}});
      check_text = c.json()["results"][0]["text"];
      auto a = s.post("/api/extra/abort", {{"genkey", "KCPP4242"}});
      EXPECT_EQ(a.json(), json({{"success", "true"}, {"done", "true"}}));
    }
    return true;
  });
  ASSERT_EQ(r.status, 200);
  std::string err;
  auto events = test::parse_sse(r.body, err);
  ASSERT_EQ(err, "");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(json::parse(events.back().data)["finish_reason"], "abort");
  std::string text;
  for (auto& e : events) text += json::parse(e.data)["token"].get<std::string>();
  EXPECT_FALSE(check_text.empty());
  EXPECT_EQ(text.compare(0, check_text.size(), check_text), 0) << "check returned a prefix of the output";
  EXPECT_LT(s.get("/api/extra/perf").json()["last_token_count"].get<int>(), 1500);
  // Unknown key: nothing to abort.
  EXPECT_EQ(s.post("/api/extra/abort", {{"genkey", "nope"}}).json()["success"], "false");
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 3}}).status, 200);
}

TEST(ServeLoad, AbortWithoutGenkeyStopsABlockingGenerate) {
  // SillyTavern's stop button: POST /api/extra/abort with no body while /generate waits.
  TestServer s(long_runs(2, 4));
  std::thread gen([&] {
    auto r = s.post("/api/v1/generate", endless("Hello"));
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.json()["results"][0]["finish_reason"], "abort");
  });
  for (int i = 0; i < 500 && s.get("/api/extra/perf").json()["running"] == 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  auto c = s.client();
  auto a = c.Post("/api/extra/abort");
  ASSERT_TRUE(a);
  EXPECT_EQ(json::parse(a->body)["success"], "true");
  gen.join();
  EXPECT_TRUE(wait_idle(s));
}

TEST(ServeLoad, ClientDisconnectFreesTheSlot) {
  TestServer s(long_runs(1, 2));
  for (const char* path : {"/api/extra/generate/stream", "/v1/completions", "/api/v1/generate"}) {
    json body = endless("Hello");
    if (std::string(path) == "/v1/completions") body = {{"prompt", "Hello"}, {"max_tokens", 1500}, {"stream", true}, {"bypass_eos", true}};
    std::thread t;
    if (std::string(path) == "/api/v1/generate") {
      // A blocking request whose client gives up after a moment.
      t = std::thread([&] {
        auto c = s.client();
        c.set_read_timeout(0, 300000);
        c.Post(path, body.dump(), "application/json");
      });
    } else {
      s.post_stream(path, body, [](const std::string& got) { return got.size() < 100; });
    }
    if (t.joinable()) t.join();
    EXPECT_TRUE(wait_idle(s)) << path;
    auto perf = s.get("/api/extra/perf").json();
    EXPECT_LT(perf["last_token_count"].get<int>(), 1500) << path;
  }
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 3}}).status, 200);
}

TEST(ServeLoad, ApiKeyGuardsEveryGeneratingRoute) {
  test::ServerSetup ss;
  ss.api_key = "s3cret";
  TestServer s(ss);
  const httplib::Headers good = {{"Authorization", "Bearer s3cret"}};
  const httplib::Headers bad = {{"Authorization", "Bearer wrong"}};
  struct Case {
    const char* path;
    json body;
  };
  std::vector<Case> cases = {
      {"/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}}},
      {"/api/latest/generate", {{"prompt", "Hi"}, {"max_length", 2}}},
      {"/api/extra/generate/stream", {{"prompt", "Hi"}, {"max_length", 2}}},
      {"/api/extra/generate/check", json::object()},
      {"/api/extra/abort", json::object()},
      {"/api/extra/tokencount", {{"prompt", "Hi"}}},
      {"/api/extra/detokenize", {{"ids", {1}}}},
      {"/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 2}}},
      {"/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 2}}},
  };
  for (const auto& c : cases) {
    for (const auto& h : {httplib::Headers{}, bad}) {
      auto r = s.post(c.path, c.body, h);
      EXPECT_EQ(r.status, 401) << c.path;
      if (std::string(c.path).rfind("/v1/", 0) == 0)
        EXPECT_EQ(r.json()["error"]["code"], "invalid_api_key") << c.path;
      else
        EXPECT_EQ(r.json()["detail"]["type"], "unauthorized") << c.path;
    }
    auto r = s.post(c.path, c.body, good);
    EXPECT_EQ(r.status, 200) << c.path << ": " << r.body;
  }
  EXPECT_EQ(s.get("/api/extra/generate/check", bad).status, 401);
  EXPECT_EQ(s.post("/api/v1/generate", {{"prompt", "Hi"}, {"max_length", 2}}, {{"X-Api-Key", "s3cret"}}).status, 200);
  // Reading routes stay open and say the server is protected.
  EXPECT_EQ(s.get("/api/extra/version").json()["protected"], true);
  EXPECT_EQ(s.get("/api/v1/model").status, 200);
}

TEST(ServeLoad, StopEndsRunningStreamsCleanly) {
  TestServer s(long_runs(2, 2));
  std::atomic<bool> started{false};
  TestServer::Reply r;
  std::thread t([&] {
    r = s.post_stream("/api/extra/generate/stream", endless("Hello"), [&](const std::string& got) {
      if (!got.empty()) started = true;
      return true;
    });
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  auto t0 = std::chrono::steady_clock::now();
  s.stop();
  t.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(5));
  std::string err;
  auto events = test::parse_sse(r.body, err);
  EXPECT_EQ(err, "");
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(json::parse(events.back().data)["finish_reason"], "abort");
}

}  // namespace
}  // namespace metharme
