#include "serve/server.h"

#include <sys/socket.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <thread>

#include "serve/http.h"
#include "serve/metrics.h"
#include "serve/ops.h"
#include "serve/route_match.h"
#include "util/error.h"

namespace metharme::serve {

namespace {
#include "serve/web_assets.inc"

using clock = std::chrono::steady_clock;
thread_local clock::time_point t_request;
thread_local const char* t_route = nullptr;  // the /metrics label of the request being answered

const char* mime_of(const std::string& name) {
  auto ends = [&](const char* ext) {
    size_t n = std::strlen(ext);
    return name.size() >= n && name.compare(name.size() - n, n, ext) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".svg")) return "image/svg+xml";
  return "application/octet-stream";
}

// Constant-time comparison for the API key.
bool same_secret(const std::string& a, const std::string& b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  for (size_t i = 0; i < a.size(); ++i) diff |= uint8_t(a[i]) ^ uint8_t(i < b.size() ? b[i] : 0);
  return diff == 0;
}

bool authorized(const ServerState& st, const httplib::Request& req) {
  if (st.opt.api_key.empty()) return true;
  std::string h = req.get_header_value("Authorization");
  const std::string bearer = "Bearer ";
  if (h.size() > bearer.size() && strncasecmp(h.c_str(), bearer.c_str(), bearer.size()) == 0)
    return same_secret(h.substr(bearer.size()), st.opt.api_key);
  std::string k = req.get_header_value("X-Api-Key");
  return !k.empty() && same_secret(k, st.opt.api_key);
}

}  // namespace

struct Server::Impl {
  httplib::Server http;
  std::vector<Route> routes;
  PathPatterns patterns;  // routes[i]'s pattern, for 405 answers
  std::atomic<bool> run_called{false};
};

Server::Server(const ServerOptions& opt) : st_(std::make_unique<ServerState>()), impl_(std::make_unique<Impl>()) {
  st_->opt = opt;
  st_->created_unix = int64_t(std::time(nullptr));
  ServerState& st = *st_;
  httplib::Server& http = impl_->http;
  const int threads = std::max(4, opt.http_threads);
  http.new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  // SO_REUSEADDR only: httplib's default adds SO_REUSEPORT, which lets a second server bind the
  // same port silently.
  http.set_socket_options([](int sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
  });
  http.set_payload_max_length(opt.max_body);
  http.set_keep_alive_timeout(3);
  http.set_read_timeout(10);
  http.set_write_timeout(10);

  http.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
    t_request = clock::now();
    t_route = nullptr;
    return httplib::Server::HandlerResponse::Unhandled;
  });
  // CORS and caching headers on every response, errors included.
  http.set_post_routing_handler([&st](const httplib::Request& req, httplib::Response& res) {
    std::string origin = req.get_header_value("Origin");
    if (!origin.empty()) {
      for (const auto& o : st.opt.cors) {
        if (o == "*" || o == origin) {
          res.set_header("Access-Control-Allow-Origin", o == "*" ? "*" : origin);
          res.set_header("Vary", "Origin");
          res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
          res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type, X-Api-Key, genkey");
          res.set_header("Access-Control-Max-Age", "600");
          break;
        }
      }
    }
    if (!res.has_header("Cache-Control")) res.set_header("Cache-Control", "no-store");
  });
  http.set_logger([&st](const httplib::Request& req, const httplib::Response& res) {
    st.metrics->observe_request(t_route ? t_route : "other", res.status);
    if (req.method == "GET" && res.status < 400) return;  // polls and the page: too chatty
    double s = std::chrono::duration<double>(clock::now() - t_request).count();
    std::fprintf(stderr, "serve: %s %s %d %.3f s %s\n", req.method.c_str(), req.path.c_str(), res.status, s,
                 req.remote_addr.c_str());
  });
  // Bodiless errors (404, 405, 413, 400 from the parser) get a JSON body under the APIs.
  http.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request& req,
                                                                      httplib::Response& res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    const Api api = api_of(req.path);
    bool api_path = api == Api::kOpenAI || req.path.rfind("/api", 0) == 0;
    if (res.status == 404) {
      std::string allow;
      for (size_t i : impl_->patterns.matching(req.path)) {
        std::string m = impl_->routes[i].method;
        if (allow.find(m) == std::string::npos) allow += (allow.empty() ? "" : ", ") + m;
      }
      if (!allow.empty()) {
        res.status = 405;
        res.set_header("Allow", allow);
      }
    }
    if (!api_path && res.status == 404) {
      res.set_content("<!doctype html><title>404</title><p>Not found: the chat page is at <a href=\"/\">/</a>.",
                      "text/html; charset=utf-8");
      return httplib::Server::HandlerResponse::Handled;
    }
    std::string msg;
    switch (res.status) {
      case 404: msg = "Not found: " + req.path; break;
      case 405: msg = "Method " + req.method + " is not allowed on " + req.path; break;
      case 413: msg = cat("Request body too large (the limit is ", st_->opt.max_body, " bytes)"); break;
      case 400: msg = "Malformed HTTP request"; break;
      default: msg = cat("HTTP error ", res.status);
    }
    send_error(api, res, res.status, msg, cat("generic.error_", res.status));
    return httplib::Server::HandlerResponse::Handled;
  }));
  http.set_exception_handler([](const httplib::Request& req, httplib::Response& res, std::exception_ptr ep) {
    std::string what = "internal error";
    try {
      std::rethrow_exception(ep);
    } catch (const std::exception& e) {
      what = e.what();
    } catch (...) {
    }
    send_error(api_of(req.path), res, 500, what, "internal_error");
  });
  http.Options(".*", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });

  // The web page, compiled in.
  for (const EmbeddedFile* f = kEmbeddedFiles; f->name; ++f) {
    std::string name = f->name;
    std::string path = name == "index.html" ? "/" : "/" + name;
    const EmbeddedFile* file = f;
    auto serve_file = [file, name](const httplib::Request&, httplib::Response& res) {
      res.set_content(reinterpret_cast<const char*>(file->data), size_t(file->size), mime_of(name));
      res.set_header("Cache-Control", "no-cache");
    };
    http.Get(path, serve_file);
    if (name == "index.html") http.Get("/index.html", serve_file);
  }
  http.Get("/favicon.ico", [](const httplib::Request&, httplib::Response& res) { res.status = 204; });
  // Readiness (/health: 503 while loading or draining) and liveness (/live: 200 while the process
  // serves HTTP at all, so that an orchestrator does not kill a draining replica).
  http.Get("/health", [&st](const httplib::Request&, httplib::Response& res) {
    t_route = "/health";
    bool loaded = st.engine.load() != nullptr, draining = st.draining.load();
    send_json(res, loaded && !draining ? 200 : 503,
              {{"status", draining ? "draining" : loaded ? "ok" : "loading model"}});
  });
  http.Get("/live", [](const httplib::Request&, httplib::Response& res) {
    t_route = "/live";
    send_json(res, 200, {{"status", "alive"}});
  });
  http.Get("/metrics", [&st](const httplib::Request& req, httplib::Response& res) {
    t_route = "/metrics";
    if (!st.opt.metrics_public && !authorized(st, req)) {
      res.set_header("WWW-Authenticate", "Bearer");
      return kobold_error(res, 401, "Authentication key is missing or invalid.", "unauthorized");
    }
    res.set_content(render_metrics(st), "text/plain; version=0.0.4; charset=utf-8");
  });

  // The APIs.
  impl_->routes = kobold_routes();
  for (auto& r : openai_routes()) impl_->routes.push_back(std::move(r));
  for (const Route& r : impl_->routes) {
    impl_->patterns.add(r.pattern);
    const Route* route = &r;
    auto label = std::make_shared<std::string>(route_label(r.pattern));
    auto handler = [&st, route, label](const httplib::Request& req, httplib::Response& res,
                                       const httplib::ContentReader* reader) {
      t_route = label->c_str();
      const Api api = api_of(req.path);
      std::string body;
      if (reader) {
        size_t limit = st.opt.max_body;
        bool over = false;
        bool ok = (*reader)([&](const char* d, size_t n) {
          if (body.size() + n > limit) return !(over = true);
          body.append(d, n);
          return true;
        });
        if (!ok) {
          bool too_big = over || res.status == 413 ||
                         req.get_header_value<uint64_t>("Content-Length") > limit;
          if (too_big)
            return send_error(api, res, 413, cat("Request body too large (the limit is ", limit, " bytes)"),
                              "bad_input");
          return send_error(api, res, 400, "Could not read the request body", "bad_input");
        }
      }
      if (route->needs_key && !authorized(st, req)) {
        res.set_header("WWW-Authenticate", "Bearer");
        if (api == Api::kKobold)
          return send_json(res, 401, {{"detail", {{"error", "Unauthorized"},
                                                  {"msg", "Authentication key is missing or invalid."},
                                                  {"type", "unauthorized"}}}});
        return openai_error(res, 401, "Incorrect or missing API key.", "invalid_request_error", "", "invalid_api_key");
      }
      ApiRequest areq{req, json::object(), req.remote_addr};
      size_t first = body.find_first_not_of(" \t\r\n");
      if (first != std::string::npos) {
        try {
          areq.body = json::parse(body);
        } catch (const json::exception& e) {
          std::string what = e.what();
          return send_error(api, res, 400, "Malformed JSON in the request body: " + what, "bad_input");
        }
      }
      if (!is_generation_path(req.path)) return route->fn(st, areq, res);
      // A generation: counted until its jobs are handed to the response (see drain()).
      st.generating.fetch_add(1);
      struct Done {
        std::atomic<int>& n;
        ~Done() { n.fetch_sub(1); }
      } done{st.generating};
      if (st.draining.load()) return send_draining(api, res);
      route->fn(st, areq, res);
    };
    if (std::strcmp(r.method, "POST") == 0) {
      http.Post(r.pattern, [handler](const httplib::Request& req, httplib::Response& res,
                                     const httplib::ContentReader& reader) { handler(req, res, &reader); });
    } else {
      http.Get(r.pattern, [handler](const httplib::Request& req, httplib::Response& res) {
        handler(req, res, nullptr);
      });
    }
  }
}

Server::~Server() { stop(); }

int Server::bind() {
  int port = st_->opt.port;
  bool ok = port == 0 ? (port = impl_->http.bind_to_any_port(st_->opt.host)) > 0
                      : impl_->http.bind_to_port(st_->opt.host, port);
  if (!ok) fail("cannot listen on ", st_->opt.host, ":", st_->opt.port, " (address in use or not available)");
  st_->opt.port = port;
  return port;
}

void Server::run() {
  impl_->run_called.store(true);
  if (!st_->stopping.load()) impl_->http.listen_after_bind();
}

void Server::attach(Engine* engine) { st_->engine.store(engine); }

Metrics& Server::metrics() { return *st_->metrics; }

void Server::stop() {
  if (st_->stopping.exchange(true)) return;
  // End every running request, let their responses finish (briefly), then close the listener.
  if (Engine* e = st_->engine.load()) e->shutdown();
  auto deadline = clock::now() + std::chrono::seconds(3);
  while (st_->following.load() > 0 && clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  // run() may be on its way into the accept loop: wait for it to get there.
  while (impl_->run_called.load() && !impl_->http.is_running() && clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  impl_->http.stop();
}

}  // namespace metharme::serve
