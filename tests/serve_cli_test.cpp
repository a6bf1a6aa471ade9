// The `metharme serve` binary: it reports its port, serves, and shuts down gracefully on SIGINT
// and SIGTERM with a request running; bad arguments give one-line errors.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <thread>

#include "support/child_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;

void graceful_shutdown_with_a_stream(int sig) {
  // SIGTERM drains: with --drain-timeout 1 the long stream is ended (as aborted) after a second.
  test::ChildProcess p({"serve", "-m", test::fixture("models/llama-rand-h256"), "--port", "0", "-t", "1", "--ctx",
                        "2048", "--drain-timeout", "1"});
  int port = p.port();
  ASSERT_GT(port, 0) << p.err();
  httplib::Client c("127.0.0.1", port);
  ASSERT_TRUE(test::wait_healthy(port)) << p.err();
  auto m = c.Get("/api/v1/model");
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["result"], "koboldcpp/llama-rand-h256");
  // A long stream is running when the signal comes: it ends with a final event, then the process exits 0.
  std::atomic<bool> started{false};
  std::string body;
  std::thread t([&] {
    httplib::Client sc("127.0.0.1", port);
    sc.set_read_timeout(60);
    httplib::Request req;
    req.method = "POST";
    req.path = "/api/extra/generate/stream";
    req.body = json({{"prompt", "Hello"}, {"max_length", 1800}, {"bypass_eos", true}}).dump();
    req.set_header("Content-Type", "application/json");
    req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
      body.append(d, n);
      started = true;
      return true;
    };
    sc.send(req);
  });
  while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  p.signal(sig);
  EXPECT_EQ(p.wait_exit(20), 0) << p.err();
  t.join();
  EXPECT_NE(body.find("\"finish_reason\":\"abort\""), std::string::npos)
      << body.substr(body.size() > 300 ? body.size() - 300 : 0);
  EXPECT_NE(p.err().find("shutting down"), std::string::npos) << p.err();
}

TEST(ServeCli, SigtermShutsDownGracefully) { graceful_shutdown_with_a_stream(SIGTERM); }
TEST(ServeCli, SigintShutsDownGracefully) { graceful_shutdown_with_a_stream(SIGINT); }

TEST(ServeCli, BadArgumentsGiveOneLineErrors) {
  auto r = test::run_cli({"serve", "-m", "/no/such/model", "--port", "0"});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err.rfind("error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  // A port that is taken.
  test::ChildProcess p({"serve", "-m", test::fixture("models/stories260k"), "--port", "0", "-t", "1"});
  int port = p.port();
  ASSERT_GT(port, 0) << p.err();
  r = test::run_cli({"serve", "-m", test::fixture("models/stories260k"), "--port", std::to_string(port)});
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("cannot listen on 127.0.0.1:" + std::to_string(port)), std::string::npos) << r.err;
  r = test::run_cli({"serve", "-m", test::fixture("models/stories260k"), "--parallel", "0"});
  EXPECT_NE(r.exit_code, 0);
  p.signal(SIGTERM);
  EXPECT_EQ(p.wait_exit(20), 0) << p.err();
}

}  // namespace
}  // namespace metharme
