// A child `metharme` process (usually `serve`) for tests of the binary itself: stderr collected,
// the port it reports, signals, exit codes and resident memory.
#pragma once

#include <sys/types.h>

#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace metharme::test {

class ChildProcess {
 public:
  // Runs the metharme binary with `args`; its stderr is read into err() as it comes.
  explicit ChildProcess(std::vector<std::string> args);
  ~ChildProcess();  // kills the child if it still runs, and reaps it
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  std::string err();
  // The port from "listening on http://HOST:PORT" on stderr, or 0 after `seconds`.
  int port(int seconds = 60);
  void signal(int sig);
  // The exit code (128 + the signal when killed by one), or -1 if still running after `seconds`.
  int wait_exit(int seconds);
  bool alive();     // still running (a child that ended is reaped and its code kept)
  size_t rss_kb();  // VmRSS from /proc, 0 once it has ended

 private:
  bool poll(int* code);  // reaps the child if it ended; true then
  pid_t pid_ = -1;
  int fd_ = -1;
  int code_ = -1;  // the exit code once reaped
  bool reaped_ = false;
  std::thread reader_;
  std::mutex mu_;
  std::string err_;
};

// Polls GET /health on 127.0.0.1:port until it answers 200; false after `seconds`.
bool wait_healthy(int port, int seconds = 60);

}  // namespace metharme::test
