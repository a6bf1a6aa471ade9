// Requests that cannot produce a token fail alone with a status naming the cause (422 for the
// body, 500 for the server) and the server keeps serving; the HTTP limits answer 408, 413, 431
// and 503. An in-process server on the 260k-parameter story model (vocabulary of 512).
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "serve/http.h"
#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::ServerSetup;
using test::TestServer;
namespace fs = std::filesystem;

const std::string kPrompt = "Once upon a time";

json greedy(json extra = json::object()) {
  json b = {{"prompt", kPrompt}, {"max_length", 12}, {"top_k", 1}, {"rep_pen", 1}, {"sampler_seed", 3}};
  b.update(extra);
  return b;
}

std::string text_of(const TestServer::Reply& r) { return r.json()["results"][0]["text"].get<std::string>(); }

std::string all_ids(int n) {
  std::string s;
  for (int i = 0; i < n; ++i) s += (i ? "," : "") + std::to_string(i);
  return s;
}

TEST(ServeFailures, TinyTemperatureIsGreedyAndTheServerLives) {
  TestServer srv;
  auto ref = srv.post("/api/v1/generate", greedy());
  ASSERT_EQ(ref.status, 200) << ref.body;
  for (double t : {1e-38, 1e-30, 1e-20, 1e-10}) {
    auto r = srv.post("/api/v1/generate", greedy({{"temperature", t}, {"top_k", 0}}));
    ASSERT_EQ(r.status, 200) << t << ": " << r.body;
    EXPECT_EQ(text_of(r), text_of(ref)) << "temperature " << t;
    auto o = srv.post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 12}, {"temperature", t}, {"seed", 1}});
    ASSERT_EQ(o.status, 200) << o.body;
    EXPECT_EQ(o.json()["choices"][0]["text"], text_of(ref)) << "temperature " << t;
  }
}

TEST(ServeFailures, EveryTokenBannedIs422AndOthersStillRun) {
  TestServer srv;
  const int V = srv.tok().vocab_size();
  auto ref = srv.post("/api/v1/generate", greedy());
  ASSERT_EQ(ref.status, 200);
  json bias = json::object();
  for (int i = 0; i < V; ++i) bias[std::to_string(i)] = -100;
  std::string all_but_eos;
  for (int i = 0; i < V; ++i)
    if (i != srv.tok().eos()) all_but_eos += (all_but_eos.empty() ? "" : ",") + std::to_string(i);
  struct Case {
    json body;
    const char* field;
  } cases[] = {
      {greedy({{"custom_token_bans", all_ids(V)}}), "custom_token_bans"},
      {greedy({{"logit_bias", bias}}), "logit_bias"},
      {greedy({{"custom_token_bans", all_but_eos}, {"ban_eos_token", true}}), "custom_token_bans"},
  };
  for (const auto& c : cases) {
    auto r = srv.post("/api/v1/generate", c.body);
    ASSERT_EQ(r.status, 422) << r.body;
    auto msg = r.json()["detail"][c.field][0].get<std::string>();
    EXPECT_NE(msg.find("every token of the vocabulary"), std::string::npos) << msg;
    auto s = srv.post("/api/extra/generate/stream", c.body);
    EXPECT_EQ(s.status, 422) << s.body;
  }
  auto o = srv.post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 4}, {"logit_bias", bias}});
  ASSERT_EQ(o.status, 400) << o.body;
  EXPECT_EQ(o.json()["error"]["param"], "logit_bias");
  // All but EOS banned and EOS allowed: EOS is the only token, the text is empty.
  auto eos = srv.post("/api/v1/generate", greedy({{"custom_token_bans", all_but_eos}}));
  ASSERT_EQ(eos.status, 200) << eos.body;
  EXPECT_EQ(text_of(eos), "");
  auto again = srv.post("/api/v1/generate", greedy());
  ASSERT_EQ(again.status, 200);
  EXPECT_EQ(text_of(again), text_of(ref));
  EXPECT_EQ(srv.engine().stats().running, 0);
}

// A copy of the story model whose final norm weight holds a NaN: every logit is NaN.
std::string nan_model(const test::TempDir& d) {
  const std::string src = test::fixture("models/stories260k");
  for (const auto& e : fs::directory_iterator(src))
    if (e.is_regular_file()) fs::copy_file(e.path(), d / e.path().filename().string());
  const std::string st = d / "model.safetensors";
  std::fstream f(st, std::ios::in | std::ios::out | std::ios::binary);
  uint64_t n = 0;
  f.read(reinterpret_cast<char*>(&n), 8);
  std::string head(n, '\0');
  f.read(head.data(), std::streamsize(n));
  auto h = json::parse(head);
  const auto& t = h.at("model.norm.weight");
  EXPECT_EQ(t.at("dtype"), "F32");
  f.seekp(std::streamoff(8 + n + t.at("data_offsets")[0].get<uint64_t>()));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  f.write(reinterpret_cast<const char*>(&nan), 4);
  return d.path();
}

TEST(ServeFailures, NanLogitsFailWith500InBothShapesAndTheServerLives) {
  test::TempDir d;
  ServerSetup s;
  s.model_dir = nan_model(d);
  TestServer srv(s);
  for (int round = 0; round < 3; ++round) {
    auto k = srv.post("/api/v1/generate", greedy());
    ASSERT_EQ(k.status, 500) << k.body;
    EXPECT_NE(k.json()["detail"]["msg"].get<std::string>().find("NaN"), std::string::npos) << k.body;
    auto ks = srv.post("/api/extra/generate/stream", greedy());
    EXPECT_EQ(ks.status, 500) << ks.body;
    auto o =
        srv.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", "Hi"}}}}, {"max_tokens", 4}});
    ASSERT_EQ(o.status, 500) << o.body;
    EXPECT_EQ(o.json()["error"]["type"], "server_error");
    auto os = srv.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 4}, {"stream", true}});
    EXPECT_EQ(os.status, 500) << os.body;
  }
  EXPECT_EQ(srv.get("/health").status, 200);
  auto perf = srv.get("/api/extra/perf").json();
  EXPECT_EQ(perf["running"], 0);
  EXPECT_EQ(perf["queue"], 0);
}

TEST(ServeFailures, PromptAboveTheByteLimitIs413BeforeTokenizing) {
  ServerSetup s;
  s.max_prompt_bytes = 4096;
  TestServer srv(s);
  std::string big(5000, 'a');
  auto k = srv.post("/api/v1/generate", greedy({{"prompt", big}}));
  ASSERT_EQ(k.status, 413) << k.body;
  EXPECT_NE(k.body.find("--max-prompt-bytes"), std::string::npos) << k.body;
  auto m =
      srv.post("/api/v1/generate", greedy({{"prompt", std::string(3000, 'a')}, {"memory", std::string(3000, 'b')}}));
  EXPECT_EQ(m.status, 413) << m.body;
  auto t = srv.post("/api/extra/tokencount", {{"prompt", big}});
  EXPECT_EQ(t.status, 413) << t.body;
  auto o = srv.post("/v1/completions", {{"prompt", big}, {"max_tokens", 4}});
  ASSERT_EQ(o.status, 413) << o.body;
  EXPECT_EQ(o.json()["error"]["param"], "prompt");
  auto c = srv.post("/v1/chat/completions", {{"messages", {{{"role", "user"}, {"content", big}}}}});
  EXPECT_EQ(c.status, 413) << c.body;
  EXPECT_EQ(srv.post("/api/v1/generate", greedy()).status, 200);
}

// Raw HTTP over a socket: what the server answers (until it closes), or "" after timeout_s.
int connect_to(int port) {
  return test::connect_loopback(port);
}

std::string read_all(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, size_t(n));
  return out;
}

void send_str(int fd, const std::string& s) { (void)send(fd, s.data(), s.size(), MSG_NOSIGNAL); }

int status_of(const std::string& response) {
  return response.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(response.c_str() + 9) : 0;
}

TEST(ServeLimits, TooManyHeadersOrBytesAre431) {
  ServerSetup s;
  s.limits.max_headers = 20;
  s.limits.max_header_bytes = 4096;
  TestServer srv(s);
  std::string many = "GET /health HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 5000; ++i) many += "X-H" + std::to_string(i) + ": v\r\n";
  many += "\r\n";
  int fd = connect_to(srv.port());
  send_str(fd, many);
  std::string r = read_all(fd);
  close(fd);
  EXPECT_EQ(status_of(r), 431) << r.substr(0, 200);
  EXPECT_NE(r.find("more than 20 header lines"), std::string::npos);
  // Many short header lines within the count but over the byte limit.
  std::string wide = "GET /health HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 10; ++i) wide += "X-H" + std::to_string(i) + ": " + std::string(1000, 'v') + "\r\n";
  wide += "\r\n";
  fd = connect_to(srv.port());
  send_str(fd, wide);
  r = read_all(fd);
  close(fd);
  EXPECT_EQ(status_of(r), 431) << r.substr(0, 200);
  // Within both limits: served, on a kept-alive connection twice.
  fd = connect_to(srv.port());
  send_str(fd, "GET /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  r = read_all(fd);
  close(fd);
  EXPECT_EQ(status_of(r), 200);
  EXPECT_NE(r.find("HTTP/1.1 200", 10), std::string::npos) << r;
}

TEST(ServeLimits, SlowHeadsGet408AndDoNotStarveOthers) {
  ServerSetup s;
  s.n_seq = 1;
  s.queue = 1;
  s.limits.header_timeout_s = 2;
  TestServer srv(s);  // 18 connection threads
  std::vector<int> slow;
  for (int i = 0; i < 30; ++i) {
    int fd = connect_to(srv.port());
    ASSERT_GE(fd, 0);
    send_str(fd, "GET /health HTTP/1.1\r\n");
    slow.push_back(fd);
  }
  auto t0 = std::chrono::steady_clock::now();
  std::thread dribble([&] {  // one header byte every 300 ms: progress, but never a whole head
    for (int k = 0; k < 12; ++k) {
      for (int fd : slow) send_str(fd, "X");
      std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  });
  // A normal client is answered within a few header timeouts, not after every slow one.
  auto r = srv.get("/health");
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_LT(waited, 10.0);
  dribble.join();
  int timed_out = 0;
  for (int fd : slow) {
    std::string resp = read_all(fd);
    timed_out += status_of(resp) == 408 || status_of(resp) == 503;
    close(fd);
  }
  EXPECT_EQ(timed_out, 30);
}

TEST(ServeLimits, ConnectionsBeyondThreadsAndQueueGet503) {
  ServerSetup s;
  s.n_seq = 1;
  s.queue = 1;
  s.limits.max_pending = 2;
  s.limits.header_timeout_s = 3;
  TestServer srv(s);  // 18 threads + 2 waiting
  ASSERT_EQ(srv.get("/health").status, 200);  // the connection threads are up
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  std::vector<int> held;
  for (int i = 0; i < 30; ++i) {
    int fd = connect_to(srv.port());
    ASSERT_GE(fd, 0);
    send_str(fd, "GET /health HTTP/1.1\r\n");  // never finished
    held.push_back(fd);
  }
  int busy = 0, other = 0;
  for (int fd : held) {
    std::string resp = read_all(fd);
    if (status_of(resp) == 503) {
      ++busy;
      EXPECT_NE(resp.find("Retry-After: 1"), std::string::npos);
    } else {
      ++other;
    }
    close(fd);
  }
  // 30 - 18 served - 2 waiting; a thread that was a moment late to wait for work counts as busy.
  EXPECT_GE(busy, 10);
  EXPECT_LE(busy, 12);
  EXPECT_EQ(busy + other, 30);
  EXPECT_EQ(srv.get("/health").status, 200);
}

// An internal error after a stream began: the stream's last event says so, the other requests of
// that step fail with 500, and the engine starts again and serves the next requests.
TEST(ServeFailures, EngineFaultAfterFirstTokensEndsStreamsWithAnErrorAndTheEngineRestarts) {
  ::setenv("METHARME_TEST_ENGINE_FAULT", "4", 1);  // read once, when the engine starts
  TestServer srv;
  ::unsetenv("METHARME_TEST_ENGINE_FAULT");

  auto k = srv.post("/api/extra/generate/stream", greedy());
  ASSERT_EQ(k.status, 200) << k.body;
  std::string err;
  auto events = test::parse_sse(k.body, err);
  ASSERT_TRUE(err.empty()) << err;
  ASSERT_GE(events.size(), 2u) << k.body;
  std::string streamed;
  for (size_t i = 0; i + 1 < events.size(); ++i) {
    auto d = json::parse(events[i].data);
    EXPECT_EQ(d["finish_reason"], "null") << events[i].data;  // KoboldCpp sends the string
    streamed += d["token"].get<std::string>();
  }
  EXPECT_FALSE(streamed.empty()) << "three tokens were drawn before the fault";
  auto last = json::parse(events.back().data);
  EXPECT_EQ(last["finish_reason"], "error") << events.back().data;
  EXPECT_EQ(last["token"], "");
  EXPECT_NE(last["error"].get<std::string>().find("METHARME_TEST_ENGINE_FAULT"), std::string::npos);

  auto o = srv.post("/v1/completions", {{"prompt", kPrompt}, {"max_tokens", 12}, {"temperature", 0}, {"stream", true}});
  ASSERT_EQ(o.status, 200) << o.body;
  events = test::parse_sse(o.body, err);
  ASSERT_TRUE(err.empty()) << err;
  ASSERT_GE(events.size(), 3u) << o.body;
  EXPECT_EQ(events.back().data, "[DONE]");
  auto e = json::parse(events[events.size() - 2].data);
  ASSERT_TRUE(e.contains("error")) << o.body;
  EXPECT_EQ(e["error"]["code"], 500);
  EXPECT_EQ(e["error"]["type"], "server_error");

  // Not streamed: the error status, since nothing was sent yet.
  auto r = srv.post("/api/v1/generate", greedy());
  EXPECT_EQ(r.status, 500) << r.body;

  // The engine came back after every fault: requests shorter than the fault's token count succeed
  // with the text they get alone.
  auto a = srv.post("/api/v1/generate", greedy({{"max_length", 3}}));
  auto b = srv.post("/api/v1/generate", greedy({{"max_length", 3}}));
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_EQ(text_of(a), text_of(b));
  EXPECT_EQ(streamed.substr(0, text_of(a).size()), text_of(a));
  EXPECT_EQ(srv.get("/health").status, 200);
}

TEST(ServeLimits, AtMostTwoLongTextsAreTokenizedAtOnce) {
  serve::ServerState st;
  std::atomic<int> inside{0}, most{0};
  std::vector<std::thread> ts;
  for (int i = 0; i < 6; ++i)
    ts.emplace_back([&] {
      serve::TokenizeTurn turn(st, 100000);
      int now = ++inside;
      int m = most.load();
      while (now > m && !most.compare_exchange_weak(m, now)) {
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      --inside;
    });
  {
    serve::TokenizeTurn small(st, 1000);  // short texts never wait
    EXPECT_LE(inside.load(), 2);
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(most.load(), 2);
}

}  // namespace
}  // namespace metharme
