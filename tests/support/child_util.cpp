#include "support/child_util.h"

#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <regex>
#include <stdexcept>

namespace metharme::test {

ChildProcess::ChildProcess(std::vector<std::string> args) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("pipe failed");
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::string bin = METHARME_BIN;
    std::vector<char*> argv{bin.data()};
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

ChildProcess::~ChildProcess() {
  if (!reaped_) {
    kill(pid_, SIGKILL);
    int st = 0;
    waitpid(pid_, &st, 0);
  }
  if (reader_.joinable()) reader_.join();
  close(fd_);
}

std::string ChildProcess::err() {
  std::lock_guard<std::mutex> lk(mu_);
  return err_;
}

int ChildProcess::port(int seconds) {
  const std::regex re("listening on http://[^:]+:([0-9]+)");
  for (int i = 0; i < seconds * 100; ++i) {
    std::smatch m;
    std::string e = err();
    if (std::regex_search(e, m, re)) return std::stoi(m[1].str());
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return 0;
}

void ChildProcess::signal(int sig) {
  if (!reaped_) kill(pid_, sig);
}

bool ChildProcess::poll(int* code) {
  if (!reaped_) {
    int st = 0;
    if (waitpid(pid_, &st, WNOHANG) != pid_) return false;
    reaped_ = true;
    code_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
  }
  if (code) *code = code_;
  return true;
}

int ChildProcess::wait_exit(int seconds) {
  int code = -1;
  for (int i = 0; i < seconds * 100; ++i) {
    if (poll(&code)) return code;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return -1;
}

bool ChildProcess::alive() { return !poll(nullptr); }

size_t ChildProcess::rss_kb() {
  std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return size_t(std::stoull(line.substr(6)));
  return 0;
}

bool wait_healthy(int port, int seconds) {
  httplib::Client c("127.0.0.1", port);
  for (int i = 0; i < seconds * 20; ++i) {
    auto r = c.Get("/health");
    if (r && r->status == 200) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

}  // namespace metharme::test
