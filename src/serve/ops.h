// Operations around the APIs: draining before exit, /metrics, /live, and the response headers
// that tell a load balancer (and its operator) how much of a prompt was served from the KV cache.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "serve/http.h"

namespace metharme::serve {

// True for the routes that start a generation (refused while draining); /check, /abort and the
// read-only routes keep working so that running requests can be followed to their end.
bool is_generation_path(const std::string& path);
// 503 with Retry-After: this replica is shutting down, another one should take the request.
// KoboldAI shape, plus the OpenAI "error" object on /v1 routes.
void send_draining(Api api, httplib::Response& res);
// Waits until the jobs have a slot (or ended), then sets X-Metharme-Prompt-Tokens and
// X-Metharme-Prompt-Tokens-Reused (summed over the jobs).
void set_reuse_headers(httplib::Response& res, const std::vector<std::shared_ptr<Job>>& jobs);
// The /metrics body.
std::string render_metrics(const ServerState& st);

}  // namespace metharme::serve
