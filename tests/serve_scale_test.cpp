// Scale-out pieces of `metharme serve`: /metrics (counts that match what clients got, the API key
// rule, the text format), the prompt-reuse headers, and the SIGTERM drain of the binary (running
// streams finish, new work gets 503 + Retry-After, /live stays 200, exit 0; a second signal ends it).
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <thread>

#include "serve/metrics.h"
#include "support/child_util.h"
#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;
using test::ServerSetup;
using test::TestServer;

// "name{labels} value" lines of an exposition -> value.
std::map<std::string, double> samples(const std::string& text) {
  std::map<std::string, double> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty() || line[0] == '#') continue;
    size_t sp = line.rfind(' ');
    out[line.substr(0, sp)] = std::stod(line.substr(sp + 1));
  }
  return out;
}

// The server counts a request once its response is written, which a client may beat: scrapes
// until every key has its value (or two seconds passed) and returns the last scrape.
std::map<std::string, double> scrape_when(const TestServer& s, const std::map<std::string, double>& want) {
  std::map<std::string, double> v;
  for (int i = 0; i < 200; ++i) {
    v = samples(s.get("/metrics").body);
    bool all = true;
    for (const auto& [k, x] : want) all = all && v[k] == x;
    if (all) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return v;
}

std::string header(const TestServer::Reply& r, const char* name) {
  auto it = r.headers.find(name);
  return it == r.headers.end() ? std::string() : it->second;
}

TEST(ServeScale, MetricsCountWhatClientsGot) {
  TestServer s;
  const std::string prompt = "Once upon a time there was a little girl named Lily who loved the park.";
  const json body = {{"prompt", prompt}, {"max_length", 8}, {"bypass_eos", true}, {"top_k", 1}};
  auto a = s.post("/api/v1/generate", body);
  auto b = s.post("/api/v1/generate", body);
  ASSERT_EQ(a.status, 200) << a.body;
  ASSERT_EQ(b.status, 200) << b.body;
  const int P = int(s.tok().encode(prompt, true).size());
  EXPECT_EQ(header(a, "X-Metharme-Prompt-Tokens"), std::to_string(P));
  EXPECT_EQ(header(a, "X-Metharme-Prompt-Tokens-Reused"), "0");
  // The same prompt again: all but the last token come from the KV cache.
  EXPECT_EQ(header(b, "X-Metharme-Prompt-Tokens-Reused"), std::to_string(P - 1));
  EXPECT_EQ(s.get("/api/v1/nothing").status, 404);

  auto m = s.get("/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.content_type.find("text/plain; version=0.0.4"), std::string::npos);
  auto v = scrape_when(s, {{"metharme_http_requests_total{route=\"/api/v1/generate\",status=\"200\"}", 2},
                           {"metharme_http_requests_total{route=\"other\",status=\"404\"}", 1}});
  EXPECT_EQ(v["metharme_http_requests_total{route=\"/api/v1/generate\",status=\"200\"}"], 2);
  EXPECT_EQ(v["metharme_http_requests_total{route=\"other\",status=\"404\"}"], 1);
  EXPECT_EQ(v["metharme_generation_tokens_total"], 16);
  EXPECT_EQ(v["metharme_prompt_tokens_cached_total"], P - 1);
  EXPECT_EQ(v["metharme_prompt_tokens_total"], P + 1);
  EXPECT_EQ(v["metharme_requests_finished_total{reason=\"length\"}"], 2);
  EXPECT_EQ(v["metharme_time_to_first_token_seconds_count"], 2);
  EXPECT_EQ(v["metharme_time_per_output_token_seconds_count"], 2);
  EXPECT_EQ(v["metharme_request_generation_tokens_sum"], 16);
  EXPECT_EQ(v["metharme_request_prompt_tokens_bucket{le=\"+Inf\"}"], 2);
  EXPECT_EQ(v["metharme_slots"], 4);
  EXPECT_EQ(v["metharme_kv_cache_positions"], 4 * 512);
  // Both requests ran in one slot, which keeps the prompt and the 7 fed output tokens for reuse
  // (the last sampled token is never fed).
  EXPECT_EQ(v["metharme_kv_cache_positions_used"], P + 7);
  EXPECT_EQ(v["metharme_ready"], 1);
  EXPECT_EQ(v["metharme_draining"], 0);
  EXPECT_EQ(v["metharme_prompt_tokens_cut_total"], 0);
  // The kernels' own self-tests ran when the model first computed (tens of microseconds).
  const double self_test = v["metharme_self_test_seconds"];
  EXPECT_GE(self_test, 0);
  EXPECT_LT(self_test, 1);
  EXPECT_EQ(v["metharme_build_info{version=\"" METHARME_VERSION "\"}"], 1);
  // A part that clamps prompts or runs a self-test reports through the hooks.
  s.server().metrics().add_prompt_tokens_cut(5);
  s.server().metrics().set_self_test_seconds(1.5);
  v = scrape_when(s, {{"metharme_prompt_tokens_cut_total", 5}});
  EXPECT_EQ(v["metharme_prompt_tokens_cut_total"], 5);
  EXPECT_NEAR(v["metharme_self_test_seconds"], self_test + 1.5, 1e-9);
  EXPECT_GE(v["metharme_http_requests_total{route=\"/metrics\",status=\"200\"}"], 1);
}

TEST(ServeScale, MetricsNeedTheKeyUnlessPublic) {
  ServerSetup setup;
  setup.api_key = "sekrit";
  TestServer s(setup);
  EXPECT_EQ(s.get("/metrics").status, 401);
  EXPECT_EQ(s.get("/metrics", {{"Authorization", "Bearer wrong"}}).status, 401);
  EXPECT_EQ(s.get("/metrics", {{"Authorization", "Bearer sekrit"}}).status, 200);
  setup.metrics_public = true;
  TestServer open(setup);
  EXPECT_EQ(open.get("/metrics").status, 200);
  EXPECT_EQ(open.post("/api/v1/generate", {{"prompt", "Hi"}}).status, 401);  // the APIs still need it
}

TEST(ServeScale, ExpositionPassesPromtool) {
  if (std::system("command -v promtool >/dev/null 2>&1") != 0) GTEST_SKIP() << "promtool is not installed";
  TestServer s;
  ASSERT_EQ(s.post("/v1/completions", {{"prompt", "Hi"}, {"max_tokens", 3}}).status, 200);
  test::TempDir d;
  std::ofstream(d / "m.txt") << s.get("/metrics").body;
  auto r = std::system(("promtool check metrics < " + test::shell_quote(d / "m.txt") + " > " +
                        test::shell_quote(d / "out.txt") + " 2>&1")
                           .c_str());
  std::ifstream in(d / "out.txt");
  std::string out((std::istreambuf_iterator<char>(in)), {});
  EXPECT_EQ(r, 0) << out;
  EXPECT_EQ(out, "");  // lint findings are printed even when the exit code is 0
}

TEST(ServeScale, RouteLabelsAreFixedNames) {
  EXPECT_EQ(serve::route_label("/api/(?:v1|latest)/generate/?"), "/api/v1/generate");
  EXPECT_EQ(serve::route_label("/api/(?:v1|latest)/info/version(?:/latest)?/?"), "/api/v1/info/version");
  EXPECT_EQ(serve::route_label("/v1/completions?/?"), "/v1/completions");
  EXPECT_EQ(serve::route_label("/v1/models/(.+)"), "/v1/models/{id}");
  EXPECT_EQ(serve::label_escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

// ---- the binary under SIGTERM --------------------------------------------------------------------

// A Kobold stream of `tokens` tokens in a thread; `started` once the first event arrived.
struct Stream {
  std::atomic<bool> started{false};
  std::string body;
  std::thread t;
  Stream(int port, int tokens) {
    t = std::thread([this, port, tokens] {
      httplib::Client c("127.0.0.1", port);
      c.set_read_timeout(120);
      httplib::Request req;
      req.method = "POST";
      req.path = "/api/extra/generate/stream";
      req.body = json({{"prompt", "Hello"}, {"max_length", tokens}, {"bypass_eos", true}}).dump();
      req.set_header("Content-Type", "application/json");
      req.content_receiver = [this](const char* d, size_t n, uint64_t, uint64_t) {
        body.append(d, n);
        started = true;
        return true;
      };
      c.send(req);
    });
  }
  void wait_started() const {
    for (int i = 0; i < 6000 && !started; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
};

bool wait_status(httplib::Client& c, const char* path, int status) {
  for (int i = 0; i < 1200; ++i) {
    auto r = c.Get(path);
    if (r && r->status == status) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(25));
  }
  return false;
}

TEST(ServeScale, SigtermDrainsRunningStreamsAndRefusesNewWork) {
  test::ChildProcess p(
      {"serve", "-m", test::fixture("models/llama-rand-h256"), "--port", "0", "-t", "1", "--ctx", "1024"});
  int port = p.port();
  ASSERT_GT(port, 0) << p.err();
  httplib::Client c("127.0.0.1", port);
  ASSERT_TRUE(wait_status(c, "/health", 200)) << p.err();
  Stream s(port, 400);
  s.wait_started();
  ASSERT_TRUE(s.started) << p.err();
  p.signal(SIGTERM);
  // Readiness goes at once, liveness stays.
  ASSERT_TRUE(wait_status(c, "/health", 503)) << p.err();
  auto live = c.Get("/live");
  ASSERT_TRUE(live);
  EXPECT_EQ(live->status, 200);
  // New generations: 503 with Retry-After, in the Kobold shape and, on /v1, the OpenAI one too.
  auto k = c.Post("/api/v1/generate", R"({"prompt":"Hi","max_length":4})", "application/json");
  ASSERT_TRUE(k);
  EXPECT_EQ(k->status, 503);
  EXPECT_EQ(k->get_header_value("Retry-After"), "1");
  EXPECT_EQ(json::parse(k->body)["detail"]["type"], "service_unavailable");
  auto o = c.Post("/v1/chat/completions", R"({"messages":[{"role":"user","content":"Hi"}]})", "application/json");
  ASSERT_TRUE(o);
  EXPECT_EQ(o->status, 503);
  EXPECT_EQ(o->get_header_value("Retry-After"), "1");
  EXPECT_EQ(json::parse(o->body)["error"]["code"], "service_unavailable");
  // Following the running request still works.
  auto chk = c.Get("/api/extra/generate/check");
  ASSERT_TRUE(chk);
  EXPECT_EQ(chk->status, 200);
  auto m = c.Get("/metrics");
  ASSERT_TRUE(m);
  auto v = samples(m->body);
  EXPECT_EQ(v["metharme_draining"], 1);
  EXPECT_EQ(v["metharme_ready"], 0);
  EXPECT_EQ(v["metharme_requests_running"], 1);
  // The stream runs to its full length, then the process exits 0.
  EXPECT_EQ(p.wait_exit(120), 0) << p.err();
  s.t.join();
  std::string error;
  auto events = test::parse_sse(s.body, error);
  ASSERT_TRUE(error.empty()) << error;
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(json::parse(events.back().data)["finish_reason"], "length") << p.err();
  EXPECT_NE(p.err().find("400 tokens in"), std::string::npos) << p.err();
}

TEST(ServeScale, SecondSignalEndsTheDrainAtOnce) {
  test::ChildProcess p(
      {"serve", "-m", test::fixture("models/llama-rand-h256"), "--port", "0", "-t", "1", "--ctx", "2048"});
  int port = p.port();
  ASSERT_GT(port, 0) << p.err();
  httplib::Client c("127.0.0.1", port);
  ASSERT_TRUE(wait_status(c, "/health", 200)) << p.err();
  Stream s(port, 1800);
  s.wait_started();
  p.signal(SIGTERM);
  ASSERT_TRUE(wait_status(c, "/health", 503)) << p.err();
  auto t0 = std::chrono::steady_clock::now();
  p.signal(SIGINT);
  EXPECT_EQ(p.wait_exit(10), 128 + SIGINT) << p.err();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(3));
  EXPECT_NE(p.err().find("second signal"), std::string::npos) << p.err();
  s.t.join();
}

}  // namespace
}  // namespace metharme
