#include "support/serve_util.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/test_util.h"

namespace metharme::test {

TestServer::TestServer(const ServerSetup& s)
    : m_(load_model(s.model_dir.empty() ? fixture(s.model) : s.model_dir, 1, s.ctx, s.n_seq, 512, s.gpu_layers)),
      tok_(Tokenizer::from_folder(s.model_dir.empty() ? fixture(s.model) : s.model_dir)) {
  serve::ServerOptions so;
  so.port = 0;
  so.api_key = s.api_key;
  so.cors = s.cors;
  so.max_body = s.max_body;
  so.n_ctx = s.ctx;
  so.model_name = "test-model";
  so.http_threads = s.n_seq + s.queue + 16;
  so.limits = s.limits;
  so.max_prompt_bytes = s.max_prompt_bytes;
  so.metrics_public = s.metrics_public;
  server_ = std::make_unique<serve::Server>(so);
  serve::EngineOptions eo;
  eo.max_queue = s.queue;
  eo.prefill_chunk = s.prefill_chunk;
  eo.spec = s.spec;
  eo.metrics = &server_->metrics();  // /metrics sees this engine's jobs, as under `metharme serve`
  engine_ = std::make_unique<serve::Engine>(*m_.rt, tok_, eo);
  port_ = server_->bind();
  if (s.attach) server_->attach(engine_.get());
  thread_ = std::thread([this] { server_->run(); });
}

TestServer::~TestServer() { stop(); }

void TestServer::stop() {
  if (stopped_) return;
  stopped_ = true;
  server_->stop();
  thread_.join();
  engine_->shutdown();
}

httplib::Client TestServer::client() const {
  httplib::Client c("127.0.0.1", port_);
  c.set_read_timeout(120);
  c.set_write_timeout(30);
  return c;
}

namespace {
TestServer::Reply reply_of(const httplib::Result& r) {
  TestServer::Reply out;
  if (!r) {
    out.status = -1;
    out.body = "no response: " + httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.body = r->body;
  out.headers = r->headers;
  out.content_type = r->get_header_value("Content-Type");
  return out;
}
}  // namespace

TestServer::Reply TestServer::post_raw(const std::string& path, const std::string& body, const httplib::Headers& h) const {
  auto c = client();
  return reply_of(c.Post(path, h, body, "application/json"));
}

TestServer::Reply TestServer::post(const std::string& path, const nlohmann::json& body, const httplib::Headers& h) const {
  return post_raw(path, body.dump(), h);
}

TestServer::Reply TestServer::get(const std::string& path, const httplib::Headers& h) const {
  auto c = client();
  return reply_of(c.Get(path, h));
}

TestServer::Reply TestServer::post_stream(const std::string& path, const nlohmann::json& body,
                                          const std::function<bool(const std::string&)>& on_data,
                                          const httplib::Headers& h) const {
  auto c = client();
  httplib::Request req;
  req.method = "POST";
  req.path = path;
  req.headers = h;
  req.set_header("Content-Type", "application/json");
  req.body = body.dump();
  std::string got;
  req.content_receiver = [&](const char* d, size_t n, uint64_t, uint64_t) {
    got.append(d, n);
    return on_data(got);
  };
  Reply out = reply_of(c.send(req));
  out.body = got;
  return out;
}

std::vector<SseEvent> parse_sse(const std::string& body, std::string& error) {
  std::vector<SseEvent> out;
  size_t i = 0;
  while (i < body.size()) {
    size_t end = body.find("\n\n", i);
    if (end == std::string::npos) {
      error = "unterminated event at byte " + std::to_string(i) + ": " + body.substr(i);
      return out;
    }
    std::string block = body.substr(i, end - i);
    SseEvent ev;
    size_t p = 0;
    while (p <= block.size()) {
      size_t nl = block.find('\n', p);
      std::string line = block.substr(p, nl == std::string::npos ? std::string::npos : nl - p);
      if (line.rfind("event: ", 0) == 0 && ev.data.empty()) {
        ev.event = line.substr(7);
      } else if (line.rfind("data: ", 0) == 0) {
        ev.data = line.substr(6);
      } else {
        error = "bad line '" + line + "' in event: " + block;
        return out;
      }
      if (nl == std::string::npos) break;
      p = nl + 1;
    }
    out.push_back(ev);
    i = end + 2;
  }
  return out;
}

int connect_loopback(int port, int timeout_s) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(uint16_t(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return fd;
}

}  // namespace metharme::test
