#include "serve/guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace metharme::serve {

namespace {

using clock = std::chrono::steady_clock;

thread_local int t_socket = -1;        // the connection this thread serves
thread_local bool t_rejecter = false;  // this thread only refuses connections

// Waits up to ms for events on fd; the revents, 0 on timeout or error.
short wait_for(int fd, short events, int ms) {
  pollfd p{fd, events, 0};
  int r = ::poll(&p, 1, std::max(0, ms));
  return r > 0 ? p.revents : 0;
}

// The peer closed or reset the connection (pending unread request bytes count as alive).
bool peer_closed(int fd) {
  short ev = wait_for(fd, POLLIN | POLLRDHUP, 0);
  if (ev & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL)) return true;
  if (ev & POLLIN) {
    char c;
    return ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
  }
  return false;
}

bool send_all(int fd, const std::string& s, int timeout_ms) {
  size_t off = 0;
  auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms);
  while (off < s.size()) {
    int left = int(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now()).count());
    if (left <= 0 || !(wait_for(fd, POLLOUT, left) & POLLOUT)) return false;
    ssize_t n = ::send(fd, s.data() + off, s.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n <= 0) return false;
    off += size_t(n);
  }
  return true;
}

// A complete response that closes the connection; the body is in the KoboldAI and OpenAI shapes
// at once because the route may not be known (the head was never read).
std::string canned(int status, const char* reason, const std::string& msg, const char* type) {
  std::string body = "{\"detail\":{\"msg\":\"" + msg + "\",\"type\":\"" + type + "\"},\"error\":{\"message\":\"" + msg +
                     "\",\"type\":\"" + (status >= 500 ? "server_error" : "invalid_request_error") +
                     "\",\"param\":null,\"code\":\"" + type + "\"}}";
  std::string head = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                     "\r\nContent-Type: application/json\r\nConnection: close\r\nCache-Control: no-store\r\n";
  if (status == 503) head += "Retry-After: 1\r\n";
  return head + "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
}

// Ends a connection after a canned response: stop sending, read what the client may still send
// for a moment (closing with unread bytes resets the connection and can lose the response).
void close_after(int fd, const std::string& response) {
  send_all(fd, response, 1000);
  ::shutdown(fd, SHUT_WR);
  char sink[4096];
  auto deadline = clock::now() + std::chrono::milliseconds(200);
  while (clock::now() < deadline && (wait_for(fd, POLLIN, 50) & POLLIN))
    if (::recv(fd, sink, sizeof sink, MSG_DONTWAIT) <= 0) break;
  ::close(fd);
}

// httplib::Stream over one connection that enforces HttpLimits while a request is read. Bytes
// are handed out only up to the end of the head while the head is read, so the head is counted
// exactly; a limit that trips fails every later read and swallows httplib's own error response,
// and the caller sends failure() instead.
class GuardedStream : public httplib::Stream {
 public:
  GuardedStream(int fd, const HttpLimits& lim) : fd_(fd), lim_(lim) {}

  // Waits up to keep_alive_s for the next request (false: none, or `stopping`).
  bool next_request(const std::function<bool()>& stopping) {
    auto deadline = clock::now() + std::chrono::seconds(lim_.keep_alive_s);
    while (pos_ == end_) {
      if (stopping()) return false;
      int left = ms_until(deadline);
      if (left <= 0) return false;
      short ev = wait_for(fd_, POLLIN, std::min(left, 100));
      if (ev & (POLLHUP | POLLERR | POLLNVAL)) return false;
      if (ev & POLLIN) break;
    }
    auto now = clock::now();
    head_deadline_ = now + std::chrono::seconds(lim_.header_timeout_s);
    request_deadline_ = now + std::chrono::seconds(lim_.request_timeout_s);
    in_head_ = true;
    head_bytes_ = 0;
    lines_ = 0;
    line_len_ = 0;
    return true;
  }

  int failure() const { return failure_; }  // 0, 408 or 431
  std::string failure_response() const {
    if (failure_ == 408)
      return canned(408, "Request Timeout",
                    "The request did not arrive in time (" +
                        std::to_string(in_head_ ? lim_.header_timeout_s : lim_.request_timeout_s) + " s)",
                    "request_timeout");
    if (head_bytes_ > lim_.max_header_bytes)
      return canned(431, "Request Header Fields Too Large",
                    "The request head is larger than " + std::to_string(lim_.max_header_bytes) + " bytes",
                    "header_too_large");
    return canned(431, "Request Header Fields Too Large",
                  "The request has more than " + std::to_string(lim_.max_headers) + " header lines",
                  "too_many_headers");
  }

  bool is_readable() const override {
    return pos_ < end_ || (wait_for(fd_, POLLIN, lim_.read_timeout_s * 1000) & POLLIN);
  }
  bool is_writable() const override {
    return failure_ == 0 && !peer_closed(fd_) && (wait_for(fd_, POLLOUT, lim_.write_timeout_s * 1000) & POLLOUT);
  }

  ssize_t read(char* ptr, size_t size) override {
    if (failure_ != 0 || size == 0) return -1;
    if (pos_ == end_ && !fill()) return -1;
    size_t n = std::min(size, end_ - pos_);
    if (in_head_) n = count_head(n);
    if (failure_ != 0) return -1;
    std::copy(buf_ + pos_, buf_ + pos_ + n, ptr);
    pos_ += n;
    return ssize_t(n);
  }

  ssize_t write(const char* ptr, size_t size) override {
    if (failure_ != 0) return ssize_t(size);  // swallowed: the caller answers instead
    size_t off = 0;
    while (off < size) {
      if (!(wait_for(fd_, POLLOUT, lim_.write_timeout_s * 1000) & POLLOUT)) return -1;
      ssize_t n = ::send(fd_, ptr + off, size - off, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (n <= 0) return -1;
      off += size_t(n);
    }
    return ssize_t(size);
  }

  void get_remote_ip_and_port(std::string& ip, int& port) const override { address(true, ip, port); }
  void get_local_ip_and_port(std::string& ip, int& port) const override { address(false, ip, port); }
  socket_t socket() const override { return fd_; }

 private:
  static int ms_until(clock::time_point t) {
    return int(std::chrono::duration_cast<std::chrono::milliseconds>(t - clock::now()).count());
  }

  bool fill() {
    for (;;) {
      const auto deadline = in_head_ ? head_deadline_ : request_deadline_;
      int left = ms_until(deadline);
      if (left <= 0) {
        failure_ = 408;
        return false;
      }
      short ev = wait_for(fd_, POLLIN, std::min(left, lim_.read_timeout_s * 1000));
      if (!ev) {
        if (ms_until(deadline) <= 0) failure_ = 408;
        return false;  // a plain read timeout ends the connection silently, as httplib does
      }
      ssize_t n = ::recv(fd_, buf_, sizeof buf_, MSG_DONTWAIT);
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) continue;
      if (n <= 0) return false;
      pos_ = 0;
      end_ = size_t(n);
      return true;
    }
  }

  // Of the next n buffered bytes, how many belong to the head; counts them against the limits.
  size_t count_head(size_t n) {
    for (size_t i = 0; i < n; ++i) {
      char c = buf_[pos_ + i];
      if (++head_bytes_ > lim_.max_header_bytes) {
        failure_ = 431;
        return i;
      }
      if (c != '\n') {
        if (c != '\r') ++line_len_;
        continue;
      }
      ++lines_;
      bool blank = line_len_ == 0;
      line_len_ = 0;
      if (blank && lines_ > 1) {  // the empty line after the headers: the body follows
        in_head_ = false;
        return i + 1;
      }
      if (lines_ > lim_.max_headers + 1) {  // the request line and max_headers headers
        failure_ = 431;
        return i;
      }
    }
    return n;
  }

  void address(bool peer, std::string& ip, int& port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    int r = peer ? getpeername(fd_, reinterpret_cast<sockaddr*>(&a), &len)
                 : getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
    ip.clear();
    port = 0;
    if (r != 0) return;
    char text[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto* v4 = reinterpret_cast<const sockaddr_in*>(&a);
      inet_ntop(AF_INET, &v4->sin_addr, text, sizeof text);
      port = ntohs(v4->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto* v6 = reinterpret_cast<const sockaddr_in6*>(&a);
      inet_ntop(AF_INET6, &v6->sin6_addr, text, sizeof text);
      port = ntohs(v6->sin6_port);
    }
    ip = text;
  }

  int fd_;
  const HttpLimits& lim_;
  char buf_[4096];
  size_t pos_ = 0, end_ = 0;
  bool in_head_ = false;
  size_t head_bytes_ = 0, line_len_ = 0;
  int lines_ = 0;
  int failure_ = 0;
  clock::time_point head_deadline_, request_deadline_;
};

// httplib's task queue, bounded: `threads` workers serve connections; when max_pending already
// wait, a new connection goes to one extra thread that only answers 503 and closes it.
class ConnectionQueue : public httplib::TaskQueue {
 public:
  ConnectionQueue(int threads, int max_pending) : max_pending_(size_t(std::max(0, max_pending))) {
    for (int i = 0; i < std::max(1, threads); ++i) threads_.emplace_back([this] { work(false); });
    threads_.emplace_back([this] { work(true); });
  }
  ~ConnectionQueue() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (pending_.size() < max_pending_ + size_t(idle_)) {
        pending_.push_back(std::move(fn));
      } else {
        rejects_.push_back(std::move(fn));
      }
    }
    cv_.notify_all();
  }

  void shutdown() override {
    {
      std::lock_guard<std::mutex> lk(mu_);
      if (stop_) return;
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void work(bool rejecter) {
    t_rejecter = rejecter;
    auto& q = rejecter ? rejects_ : pending_;
    for (;;) {
      std::function<void()> fn;
      {
        std::unique_lock<std::mutex> lk(mu_);
        if (!rejecter) ++idle_;
        cv_.wait(lk, [&] { return stop_ || !q.empty(); });
        if (!rejecter) --idle_;
        if (q.empty()) return;  // stopping, nothing left
        fn = std::move(q.front());
        q.pop_front();
      }
      fn();  // httplib's task: process_and_close_socket, which never throws out
    }
  }

  size_t max_pending_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::function<void()>> pending_, rejects_;
  int idle_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace

GuardedHttpServer::GuardedHttpServer(const HttpLimits& limits) : lim_(limits) {
  lim_.threads = std::max(1, lim_.threads);
  lim_.read_timeout_s = std::max(1, lim_.read_timeout_s);
  lim_.write_timeout_s = std::max(1, lim_.write_timeout_s);
  const int threads = lim_.threads, pending = lim_.max_pending;
  new_task_queue = [threads, pending] { return new ConnectionQueue(threads, pending); };
  set_read_timeout(lim_.read_timeout_s);
  set_write_timeout(lim_.write_timeout_s);
  set_keep_alive_timeout(lim_.keep_alive_s);
}

void GuardedHttpServer::widen_backlog() {
  if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, std::max(16, lim_.threads + lim_.max_pending));
}

bool GuardedHttpServer::process_and_close_socket(socket_t sock) {
  if (t_rejecter) {
    busy_.fetch_add(1);
    close_after(sock,
                canned(503, "Service Unavailable", "Server is busy; please try again later.", "service_unavailable"));
    return false;
  }
  active_.fetch_add(1);
  t_socket = sock;
  bool ret = false;
  std::string failure;
  try {
    GuardedStream strm(sock, lim_);
    auto stopping = [this] { return svr_sock_ == INVALID_SOCKET; };
    for (size_t n = std::max<size_t>(1, keep_alive_max_count_); n > 0 && strm.next_request(stopping); --n) {
      bool closed = false;
      ret = process_request(strm, n == 1 || stopping(), closed, nullptr);
      if (strm.failure() != 0) {
        head_.fetch_add(1);
        failure = strm.failure_response();
        ret = false;
      }
      if (!ret || closed) break;
    }
  } catch (...) {
    ret = false;  // nothing may escape a connection thread
  }
  t_socket = -1;
  if (!failure.empty()) {
    close_after(sock, failure);
  } else {
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
  }
  active_.fetch_sub(1);
  return ret;
}

bool client_gone() { return t_socket >= 0 && peer_closed(t_socket); }

}  // namespace metharme::serve
