#include "cli/bench_verify.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "kernels/isa.h"
#include "util/error.h"
#include "util/sysinfo.h"

namespace metharme::cli {

std::vector<int> parse_verify_ks(const std::string& s) {
  std::vector<int> ks;
  std::string t = s;
  std::replace(t.begin(), t.end(), ',', ' ');
  std::istringstream in(t);
  std::string item;
  while (in >> item) {
    size_t used = 0;
    int v = 0;
    try {
      v = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || v < 1 || v > 64) fail("--verify-k: '", item, "' is not a token count in 1..64");
    ks.push_back(v);
  }
  if (ks.empty()) fail("--verify-k: no token counts given");
  if (std::find(ks.begin(), ks.end(), 1) == ks.end()) ks.push_back(1);  // the baseline
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  return ks;
}

namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

// Tokens one verification pass yields with k - 1 drafts each kept with probability a (i.i.d.):
// the kept prefix plus the token drawn after it, 1 + a + ... + a^(k-1).
double tokens_per_pass(int k, double a) {
  double e = 0, p = 1;
  for (int i = 0; i < k; ++i, p *= a) e += p;
  return e;
}

}  // namespace

int run_verify_bench(const VerifyBenchArgs& a, const RuntimeFlags& rf) {
  using clock = std::chrono::steady_clock;
  LoadOptions lo;
  lo.quiet = a.json;
  auto w = load_weights(a.model, lo);
  RuntimeOptions ro;
  apply_runtime_flags(rf, *w, ro);
  if (a.threads > 0) ro.n_threads = a.threads;
  const int kmax = a.ks.back();
  ro.n_ctx = a.depth + kmax;
  ro.max_batch = std::max(kmax, 64);
  LlamaRuntime rt(*w, ro);
  const int V = rt.n_vocab();
  std::mt19937_64 rng(a.seed);
  std::uniform_int_distribution<int> tok(3, V - 1);
  std::vector<int> prefix(size_t(std::max(a.depth, 1)));
  for (int& t : prefix) t = tok(rng);
  if (a.depth > 0) rt.eval(std::span<const int>(prefix.data(), size_t(a.depth)), 0);  // the cache depth
  std::vector<float> logits(size_t(kmax) * size_t(V));
  std::vector<BatchToken> batch;
  nlohmann::json rows = nlohmann::json::array();
  double base_ms = 0;
  for (int k : a.ks) {
    // k tokens at positions depth.., logits at every one, as a verification pass; every pass
    // overwrites the same positions, as rejected drafts are.
    batch.clear();
    for (int i = 0; i < k; ++i) batch.push_back({tok(rng), int32_t(a.depth + i), 0, true});
    rt.forward(batch, logits.data());  // warm-up
    std::vector<double> ms;
    for (int r = 0; r < a.reps; ++r) {
      auto t0 = clock::now();
      for (int s = 0; s < a.steps; ++s) rt.forward(batch, logits.data());
      ms.push_back(std::chrono::duration<double, std::milli>(clock::now() - t0).count() / a.steps);
    }
    const double m = median(ms);
    if (k == 1) base_ms = m;
    rows.push_back({{"k", k}, {"ms", m}, {"runs_ms", ms}});
  }
  for (auto& r : rows) {
    const int k = r["k"].get<int>();
    const double ratio = r["ms"].get<double>() / base_ms;
    r["ratio"] = ratio;
    for (double acc : {0.5, 0.7, 0.9})
      r["speedup_at_" + std::to_string(int(acc * 100))] = tokens_per_pass(k, acc) / ratio;
  }
  nlohmann::json j = {{"model", a.model},
                      {"format", w->format},
                      {"cpu", cpu_model_name()},
                      {"isa", kernels::isa_name(kernels::active_isa())},
                      {"threads", rt.pool().size()},
                      {"kv_type", rf.kv_type},
                      {"depth", a.depth},
                      {"steps", a.steps},
                      {"reps", a.reps},
                      {"verify", rows}};
  if (a.json) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("model: %s (%s), %s, %d threads, %s, KV %s, cache depth %d\n", a.model.c_str(), w->format.c_str(),
              cpu_model_name().c_str(), rt.pool().size(), kernels::isa_name(kernels::active_isa()), rf.kv_type.c_str(),
              a.depth);
  std::printf("| k (tokens per pass) | ms per pass | x decode step | speed-up at acceptance 0.5 / 0.7 / 0.9 |\n");
  std::printf("|---|---|---|---|\n");
  for (const auto& r : rows)
    std::printf("| %d | %.3f | %.3f | %.2f / %.2f / %.2f |\n", r["k"].get<int>(), r["ms"].get<double>(),
                r["ratio"].get<double>(), r["speedup_at_50"].get<double>(), r["speedup_at_70"].get<double>(),
                r["speedup_at_90"].get<double>());
  std::printf(
      "A pass over k tokens verifies k - 1 drafts; speed-up = expected tokens per pass "
      "(1 + a + ... + a^(k-1)) / its cost in decode steps, drafting cost not counted.\n");
  return 0;
}

}  // namespace metharme::cli
