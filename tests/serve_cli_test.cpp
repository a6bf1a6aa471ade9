// The `metharme serve` binary: it reports its port, serves, and shuts down gracefully on SIGINT
// and SIGTERM with a request running; bad arguments give one-line errors.
#include <gtest/gtest.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <mutex>
#include <nlohmann/json.hpp>
#include <regex>
#include <thread>

#include "support/test_util.h"

namespace metharme {
namespace {

using nlohmann::json;

// A child `metharme serve` with stderr captured.
class ServeProcess {
 public:
  explicit ServeProcess(std::vector<std::string> args) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      std::vector<char*> argv;
      std::string bin = METHARME_BIN;
      argv.push_back(bin.data());
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(bin.c_str(), argv.data());
      _exit(127);
    }
    close(fds[1]);
    fd_ = fds[0];
    reader_ = std::thread([this] {
      char buf[4096];
      ssize_t n;
      while ((n = read(fd_, buf, sizeof buf)) > 0) {
        std::lock_guard<std::mutex> lk(mu_);
        err_.append(buf, size_t(n));
      }
    });
  }
  ~ServeProcess() {
    if (pid_ > 0 && !exited_) {
      kill(pid_, SIGKILL);
      wait_exit(10);
    }
    if (reader_.joinable()) reader_.join();
    close(fd_);
  }
  std::string err() {
    std::lock_guard<std::mutex> lk(mu_);
    return err_;
  }
  // The port from "listening on http://HOST:PORT", or 0 after `seconds`.
  int port(int seconds = 60) {
    std::regex re("listening on http://[^:]+:([0-9]+)");
    for (int i = 0; i < seconds * 100; ++i) {
      std::smatch m;
      std::string e = err();
      if (std::regex_search(e, m, re)) return std::stoi(m[1].str());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return 0;
  }
  void signal(int sig) { kill(pid_, sig); }
  // The exit code, or -1 if it did not exit within `seconds`.
  int wait_exit(int seconds) {
    for (int i = 0; i < seconds * 100; ++i) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        exited_ = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  bool exited_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::string err_;
};

bool wait_ready(httplib::Client& c, int seconds = 60) {
  for (int i = 0; i < seconds * 20; ++i) {
    auto r = c.Get("/health");
    if (r && r->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

void graceful_shutdown_with_a_stream(int sig) {
  // SIGTERM drains: with --drain-timeout 1 the long stream is ended (as aborted) after a second.
  ServeProcess p({"serve", "-m", test::fixture("models/llama-rand-h256"), "--port", "0", "-t", "1", "--ctx", "2048",
                  "--drain-timeout", "1"});
  int port = p.port();
  ASSERT_GT(port, 0) << p.err();
  httplib::Client c("127.0.0.1", port);
  ASSERT_TRUE(wait_ready(c)) << p.err();
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
  EXPECT_NE(body.find("\"finish_reason\":\"abort\""), std::string::npos) << body.substr(body.size() > 300 ? body.size() - 300 : 0);
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
  ServeProcess p({"serve", "-m", test::fixture("models/stories260k"), "--port", "0", "-t", "1"});
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
