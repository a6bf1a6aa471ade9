// A bounded hostile load against a spawned `metharme serve` (the 260k-parameter story model):
// valid greedy requests mixed with bad JSON, wrong types, huge numbers, invalid UTF-8, deep
// nesting, huge stop and ban lists, tiny temperatures, all-banned vocabularies, prompts over the
// byte limit, slow partial heads, too many headers, clients vanishing mid-stream and abort races.
// The process must survive, every valid request must get the text it gets alone, every invalid
// one its status, no slot may stay busy and the resident memory must come back near its level.
// Also: the server with 257 and 1024 threads gives the same greedy text as with one.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <regex>
#include <thread>

#include "support/serve_util.h"
#include "support/test_util.h"

namespace metharme {
namespace {

#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

using nlohmann::json;
using clock_type = std::chrono::steady_clock;

// A child `metharme serve` whose stderr is collected.
class Child {
 public:
  explicit Child(std::vector<std::string> args) {
    int fds[2];
    if (pipe(fds) != 0) throw std::runtime_error("pipe");
    pid_ = fork();
    if (pid_ == 0) {
      dup2(fds[1], 2);
      close(fds[0]);
      close(fds[1]);
      std::string bin = METHARME_BIN;
      std::vector<char*> argv = {bin.data()};
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
  ~Child() {
    if (pid_ > 0) {
      if (alive()) kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    reader_.join();
    close(fd_);
  }
  std::string err() {
    std::lock_guard<std::mutex> lk(mu_);
    return err_;
  }
  int port() {
    std::regex re("listening on http://[^:]+:([0-9]+)");
    for (int i = 0; i < 6000; ++i) {
      std::smatch m;
      std::string e = err();
      if (std::regex_search(e, m, re)) return std::stoi(m[1].str());
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return 0;
  }
  bool alive() {
    int st = 0;
    return waitpid(pid_, &st, WNOHANG) == 0;
  }
  // SIGINT, then the exit status once it ended (-1: still running after timeout_s, then killed).
  int interrupt_and_wait(int timeout_s) {
    kill(pid_, SIGINT);
    for (int i = 0; i < timeout_s * 20; ++i) {
      int st = 0;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }
  size_t rss_kb() {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line))
      if (line.rfind("VmRSS:", 0) == 0) return size_t(std::stoull(line.substr(6)));
    return 0;
  }

 private:
  pid_t pid_ = -1;
  int fd_ = -1;
  std::thread reader_;
  std::mutex mu_;
  std::string err_;
};

bool wait_ready(int port) {
  httplib::Client c("127.0.0.1", port);
  for (int i = 0; i < 1200; ++i) {
    auto r = c.Get("/health");
    if (r && r->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

struct Reply {
  int status = -1;
  std::string body;
};

Reply post(int port, const std::string& path, const std::string& body) {
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60);
  auto r = c.Post(path, body, "application/json");
  return r ? Reply{r->status, r->body} : Reply{-1, httplib::to_string(r.error())};
}

int raw_request(int port, const std::string& head, int dribble_ms = 0) {
  int fd = test::connect_loopback(port);
  if (fd < 0) return -1;
  if (dribble_ms > 0) {  // one byte at a time, never the end of the head
    for (char c : head) {
      if (send(fd, &c, 1, MSG_NOSIGNAL) != 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(dribble_ms));
    }
  } else {
    (void)send(fd, head.data(), head.size(), MSG_NOSIGNAL);
  }
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = recv(fd, buf, sizeof buf, 0)) > 0) out.append(buf, size_t(n));
  close(fd);
  return out.rfind("HTTP/1.1 ", 0) == 0 ? std::atoi(out.c_str() + 9) : 0;
}

const std::vector<std::string> kPrompts = {"Once upon a time", "The little dog", "Lily and Ben went", "One day"};

json kobold(const std::string& prompt, json extra = json::object()) {
  json b = {{"prompt", prompt}, {"max_length", 16}, {"top_k", 1}, {"rep_pen", 1}, {"sampler_seed", 1}};
  b.update(extra);
  return b;
}
json openai(const std::string& prompt) {
  return {{"prompt", prompt}, {"max_tokens", 16}, {"temperature", 0}, {"seed", 1}};
}

std::string kobold_text(const Reply& r) { return json::parse(r.body)["results"][0]["text"].get<std::string>(); }

// Concatenated tokens of a Kobold SSE stream.
std::string stream_text(const std::string& body) {
  std::string text;
  size_t at = 0;
  while ((at = body.find("data: ", at)) != std::string::npos) {
    size_t end = body.find('\n', at);
    auto j = json::parse(body.substr(at + 6, end - at - 6));
    text += j["token"].get<std::string>();
    at = end;
  }
  return text;
}

struct Tally {
  std::mutex mu;
  int requests = 0, valid = 0, valid_same = 0, crashes = 0;
  std::map<int, int> invalid_by_status;
  std::vector<std::string> problems;
  void valid_result(bool same, const std::string& what) {
    std::lock_guard<std::mutex> lk(mu);
    ++requests;
    ++valid;
    valid_same += same;
    if (!same && problems.size() < 20) problems.push_back("valid request answered differently: " + what);
  }
  void invalid_result(int got, std::vector<int> want, const std::string& what) {
    std::lock_guard<std::mutex> lk(mu);
    ++requests;
    ++invalid_by_status[got];
    if (std::find(want.begin(), want.end(), got) == want.end() && problems.size() < 20)
      problems.push_back(what + ": status " + std::to_string(got));
  }
};

TEST(ServeHostile, MixedHostileLoadLeavesValidAnswersAndTheProcessIntact) {
  Child srv({"serve",
             "-m",
             test::fixture("models/stories260k"),
             "--port",
             "0",
             "-t",
             "2",
             "--parallel",
             "4",
             "--queue",
             "32",
             "--ctx",
             "512",
             "--header-timeout",
             "2",
             "--request-timeout",
             "4",
             "--max-headers",
             "64",
             "--max-prompt-bytes",
             "65536"});
  const int port = srv.port();
  ASSERT_GT(port, 0) << srv.err();
  ASSERT_TRUE(wait_ready(port)) << srv.err();
  const auto t_start = clock_type::now();

  // Each valid request alone first: the answers every later copy must reproduce.
  std::vector<std::string> ref_k, ref_o;
  for (const auto& p : kPrompts) {
    auto k = post(port, "/api/v1/generate", kobold(p).dump());
    ASSERT_EQ(k.status, 200) << k.body;
    ref_k.push_back(kobold_text(k));
    auto o = post(port, "/v1/completions", openai(p).dump());
    ASSERT_EQ(o.status, 200) << o.body;
    ref_o.push_back(json::parse(o.body)["choices"][0]["text"].get<std::string>());
  }
  const size_t rss_before = srv.rss_kb();

  Tally tally;
  std::string all_ids, most_ids, deep(20000, '['), huge_prompt(70000, 'a');
  for (int i = 0; i < 512; ++i) all_ids += (i ? "," : "") + std::to_string(i);
  for (int i = 3; i < 400; ++i) most_ids += (i > 3 ? "," : "") + std::to_string(i);
  deep += std::string(20000, ']');
  json many_stops = json::array();
  for (int i = 0; i < 5000; ++i) many_stops.push_back("stop" + std::to_string(i));

  auto client = [&](int id) {
    std::mt19937 rng(uint32_t(1000 + id));
    for (int n = 0; n < 36; ++n) {
      const size_t pi = rng() % kPrompts.size();
      const std::string& p = kPrompts[pi];
      switch (rng() % 16) {
        case 0:
        case 1: {
          auto r = post(port, "/api/v1/generate", kobold(p).dump());
          tally.valid_result(r.status == 200 && kobold_text(r) == ref_k[pi], "kobold " + p);
          break;
        }
        case 2: {
          auto r = post(port, "/v1/completions", openai(p).dump());
          tally.valid_result(r.status == 200 && json::parse(r.body)["choices"][0]["text"] == ref_o[pi], "openai " + p);
          break;
        }
        case 3: {
          auto r = post(port, "/api/extra/generate/stream", kobold(p).dump());
          tally.valid_result(r.status == 200 && stream_text(r.body) == ref_k[pi], "stream " + p);
          break;
        }
        case 4: {  // a tiny temperature is greedy
          auto r = post(port, "/api/v1/generate", kobold(p, {{"temperature", 1e-38}, {"top_k", 0}}).dump());
          tally.valid_result(r.status == 200 && kobold_text(r) == ref_k[pi], "temperature 1e-38 " + p);
          break;
        }
        case 5:
          tally.invalid_result(post(port, "/api/v1/generate", "{\"prompt\": \"x\",").status, {400}, "bad JSON");
          break;
        case 6:
          tally.invalid_result(post(port, "/api/v1/generate", R"({"prompt": 5, "max_length": "many"})").status, {422},
                               "wrong types");
          break;
        case 7:
          tally.invalid_result(post(port, "/api/v1/generate", R"({"prompt": "x", "max_length": 1e300})").status, {422},
                               "huge number");
          tally.invalid_result(post(port, "/v1/completions", R"({"prompt": "x", "max_tokens": 1e400})").status, {400},
                               "number beyond double");
          break;
        case 8:
          tally.invalid_result(post(port, "/api/v1/generate", "{\"prompt\": \"\xff\xfe bad \xc3\"}").status, {400},
                               "invalid UTF-8");
          break;
        case 9:
          tally.invalid_result(post(port, "/api/v1/generate", deep).status, {400, 422}, "deep nesting");
          break;
        case 10:
          tally.invalid_result(post(port, "/api/v1/generate", kobold(p, {{"stop_sequence", many_stops}}).dump()).status,
                               {422}, "5000 stop strings");
          break;
        case 11:
          tally.invalid_result(
              post(port, "/api/v1/generate", kobold(p, {{"custom_token_bans", all_ids}}).dump()).status, {422},
              "every token banned");
          break;
        case 12: {  // most of the vocabulary banned: still answers
          auto r = post(port, "/api/v1/generate", kobold(p, {{"custom_token_bans", most_ids}}).dump());
          tally.invalid_result(r.status, {200}, "397 tokens banned");
          break;
        }
        case 13:
          tally.invalid_result(post(port, "/api/v1/generate", kobold(huge_prompt).dump()).status, {413},
                               "prompt over the byte limit");
          break;
        case 14: {  // a client that leaves mid-stream
          httplib::Client c("127.0.0.1", port);
          httplib::Request req;
          req.method = "POST";
          req.path = "/api/extra/generate/stream";
          req.body = kobold(p, {{"max_length", 200}, {"bypass_eos", true}}).dump();
          req.set_header("Content-Type", "application/json");
          int chunks = 0;
          req.content_receiver = [&](const char*, size_t, uint64_t, uint64_t) { return ++chunks < 3; };
          c.send(req);
          tally.invalid_result(chunks >= 1 ? 200 : 0, {200}, "vanishing stream client");
          break;
        }
        default: {  // abort race: the abort lands before, during or after the generation
          const std::string key = "race-" + std::to_string(id) + "-" + std::to_string(n);
          std::thread aborter([&, delay = int(rng() % 30)] {
            std::this_thread::sleep_for(std::chrono::milliseconds(delay));
            post(port, "/api/extra/abort", json{{"genkey", key}}.dump());
          });
          auto r = post(port, "/api/v1/generate", kobold(p, {{"genkey", key}, {"max_length", 64}}).dump());
          aborter.join();
          tally.invalid_result(r.status, {200}, "abort race");
          break;
        }
      }
    }
  };
  auto attacker = [&] {
    for (int round = 0; round < 3; ++round) {
      std::vector<std::thread> slow;
      std::atomic<int> ok{0};
      for (int i = 0; i < 6; ++i)
        slow.emplace_back([&] {
          int st =
              raw_request(port, "POST /api/v1/generate HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa", 150);
          ok += st == 408;
        });
      std::string many = "GET /health HTTP/1.1\r\nHost: x\r\n";
      for (int i = 0; i < 2000; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
      tally.invalid_result(raw_request(port, many + "\r\n"), {431}, "2000 headers");
      for (auto& t : slow) t.join();
      for (int i = 0; i < 6; ++i) tally.invalid_result(i < ok ? 408 : 0, {408}, "slow partial head");
    }
  };
  // Two rounds: memory kept after the first (allocator arenas of the connection threads) must
  // not grow again in the second.
  size_t rss_round1 = 0;
  for (int round = 0; round < 2; ++round) {
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) threads.emplace_back(client, i + 100 * round);
    threads.emplace_back(attacker);
    for (auto& t : threads) t.join();
    if (round == 0) rss_round1 = srv.rss_kb();
  }

  // No slot or queue entry stays taken.
  json perf;
  for (int i = 0; i < 100; ++i) {
    auto r = httplib::Client("127.0.0.1", port).Get("/api/extra/perf");
    ASSERT_TRUE(r) << srv.err();
    perf = json::parse(r->body);
    if (perf["running"] == 0 && perf["queue"] == 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  EXPECT_EQ(perf["running"], 0);
  EXPECT_EQ(perf["queue"], 0);
  // The references once more, alone.
  for (size_t i = 0; i < kPrompts.size(); ++i) {
    auto k = post(port, "/api/v1/generate", kobold(kPrompts[i]).dump());
    EXPECT_EQ(k.status == 200 ? kobold_text(k) : k.body, ref_k[i]);
  }
  const size_t rss_after = srv.rss_kb();
  tally.crashes = srv.alive() ? 0 : 1;
  const double secs = std::chrono::duration<double>(clock_type::now() - t_start).count();

  std::string by_status;
  for (const auto& [st, n] : tally.invalid_by_status) by_status += " " + std::to_string(st) + ":" + std::to_string(n);
  std::printf(
      "hostile load: %d requests in %.1f s; valid %d, answered identically %d; others by status%s; "
      "crashes %d; RSS before %zu KiB, after round 1 %zu KiB, after round 2 %zu KiB\n",
      tally.requests, secs, tally.valid, tally.valid_same, by_status.c_str(), tally.crashes, rss_before, rss_round1,
      rss_after);
  for (const auto& p : tally.problems) ADD_FAILURE() << p;
  EXPECT_EQ(tally.crashes, 0) << srv.err();
  EXPECT_EQ(tally.valid_same, tally.valid);
  EXPECT_GT(tally.valid, 50);
  if (!kAddressSanitizer) {
    EXPECT_LT(rss_round1, rss_before + 64 * 1024) << "resident memory grew by more than 64 MiB";
    EXPECT_LT(rss_after, rss_round1 + 8 * 1024) << "resident memory grew again in the second round";
  }
  // Ctrl-C after all that: a clean exit. Under ASan this is the leak check: LeakSanitizer runs at
  // exit and turns any leaked block into a non-zero status (RSS says little there, as the
  // quarantine and the allocator keep freed memory).
  EXPECT_EQ(srv.interrupt_and_wait(60), 0) << srv.err();
}

// The server at both ends of -t: the same greedy text as with one thread.
TEST(ServeHostile, ManyThreadsServeTheSameGreedyText) {
  std::string want;
  for (int threads : {1, 257, 1024}) {
    Child srv({"serve", "-m", test::fixture("models/llama-rand-h256"), "--port", "0", "-t", std::to_string(threads),
               "--parallel", "2", "--ctx", "256"});
    const int port = srv.port();
    ASSERT_GT(port, 0) << srv.err();
    ASSERT_TRUE(wait_ready(port)) << srv.err();
    auto r = post(port, "/api/v1/generate", kobold("Hello there", {{"max_length", 8}}).dump());
    ASSERT_EQ(r.status, 200) << r.body << srv.err();
    if (threads == 1)
      want = kobold_text(r);
    else
      EXPECT_EQ(kobold_text(r), want) << threads << " threads";
    EXPECT_NE(srv.err().find(std::to_string(threads) + " threads"), std::string::npos) << srv.err();
  }
}

}  // namespace
}  // namespace metharme
