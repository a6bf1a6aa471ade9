// metharme bench: llama-bench-style prompt (pp) and generation (tg) throughput, weights read per
// generated token against the machine's measured read bandwidth, and peak memory.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <random>

#include "cli/bench_verify.h"
#include "cli/command.h"
#include "cli/runtime_flags.h"
#include "kernels/bandwidth.h"
#include "model/llama.h"
#include "model/offload.h"
#include "ops/q4_linear.h"
#include "util/error.h"
#include "util/sysinfo.h"

namespace metharme::cli {
namespace {

using json = nlohmann::json;

struct Args {
  std::string model, act = "auto";
  std::shared_ptr<RuntimeFlags> rt_flags;
  int p = 512, n = 128, reps = 3, probe_mb = 1024;
  std::vector<int> depths{0};
  bool json_out = false, no_probe = false;
  uint64_t seed = 1;
  std::string verify_k;  // --verify-k (bench_verify.h)
  int verify_depth = 512;
};

struct Stat {
  std::vector<double> tok_s;
  double seconds = 0, attn_seconds = 0;  // all runs: wall time, and of it attention over the cache
  double attn_share() const { return seconds > 0 ? attn_seconds / seconds : 0; }
  double median() const {
    std::vector<double> v = tok_s;
    std::sort(v.begin(), v.end());
    return v.empty() ? 0 : v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
  }
  double stdev() const {
    if (tok_s.size() < 2) return 0;
    double m = 0, s = 0;
    for (double v : tok_s) m += v;
    m /= double(tok_s.size());
    for (double v : tok_s) s += (v - m) * (v - m);
    return std::sqrt(s / double(tok_s.size() - 1));
  }
};

// The probe runs in a child process so its buffer never counts towards this process's peak RSS.
kernels::BandwidthResult probe_bandwidth(int threads, size_t bytes) {
  int fd[2];
  if (::pipe(fd) != 0) fail("bench: pipe failed");
  pid_t pid = ::fork();
  if (pid < 0) fail("bench: fork failed");
  if (pid == 0) {
    ::close(fd[0]);
    auto r = kernels::measure_read_bandwidth(threads, bytes, 5);
    double v[2] = {r.median_gbps, r.best_gbps};
    ssize_t w = ::write(fd[1], v, sizeof v);
    ::_exit(w == ssize_t(sizeof v) ? 0 : 1);
  }
  ::close(fd[1]);
  double v[2] = {0, 0};
  ssize_t got = ::read(fd[0], v, sizeof v);
  ::close(fd[0]);
  int st = 0;
  ::waitpid(pid, &st, 0);
  if (got != ssize_t(sizeof v)) fail("bench: the bandwidth probe failed (", bytes >> 20, " MiB buffer)");
  kernels::BandwidthResult r;
  r.median_gbps = v[0];
  r.best_gbps = v[1];
  return r;
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

std::string gib(size_t b) {
  char s[32];
  std::snprintf(s, sizeof s, "%.2f GiB", double(b) / double(1ull << 30));
  return s;
}

json stat_json(const Stat& s, int tokens) {
  return {{"tokens", tokens},   {"tok_s", s.median()}, {"stdev", s.stdev()},
          {"runs", s.tok_s},    {"attention_share", s.attn_share()}};
}

struct DepthRun {
  int depth = 0;
  Stat pp, tg;
};

// Per depth d (llama-bench's -d): positions [0, d) of the cache hold earlier tokens (random ids,
// evaluated once and reused by later depths), then pp evaluates the prompt at positions d.. and tg
// decodes greedily from position d. Attention's share is LlamaRuntime::attention_seconds() over
// the runs' wall time.
std::vector<DepthRun> run_depths(const Args& a, LlamaRuntime& rt, const std::vector<int>& prompt, int first,
                                 std::mt19937_64& rng) {
  const int V = rt.n_vocab();
  std::uniform_int_distribution<int> tok(3, V - 1);
  std::vector<DepthRun> out;
  int filled = 1;  // positions holding evaluated tokens (the warm-up wrote position 0)
  for (int depth : a.depths) {
    if (depth > filled) {
      std::vector<int> fill(size_t(depth - filled));
      for (auto& t : fill) t = tok(rng);
      rt.eval(fill, filled);
      filled = depth;
    }
    DepthRun d;
    d.depth = depth;
    for (int r = 0; r < a.reps && a.p > 0; ++r) {
      rt.reset_attention_seconds();
      auto t0 = std::chrono::steady_clock::now();
      rt.eval(prompt, depth);
      const double s = seconds_since(t0);
      d.pp.tok_s.push_back(a.p / s);
      d.pp.seconds += s;
      d.pp.attn_seconds += rt.attention_seconds();
    }
    if (a.p > 0) filled = std::max(filled, depth + a.p);
    for (int r = 0; r < a.reps && a.n > 0; ++r) {
      int id = first;
      rt.reset_attention_seconds();
      auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < a.n; ++i) {
        const float* l = rt.eval(std::span<const int>(&id, 1), depth + i);
        id = int(std::max_element(l, l + V) - l);
      }
      const double s = seconds_since(t0);
      d.tg.tok_s.push_back(a.n / s);
      d.tg.seconds += s;
      d.tg.attn_seconds += rt.attention_seconds();
    }
    if (a.n > 0) filled = std::max(filled, depth + a.n);
    out.push_back(std::move(d));
  }
  return out;
}

Registrar reg("bench", "Measure prompt and generation speed (llama-bench style), bandwidth use and memory",
              [](CLI::App& app) {
  auto a = std::make_shared<Args>();
  app.add_option("-m,--model", a->model, "Model folder")->required();
  app.add_option("-p,--n-prompt", a->p, "Prompt tokens per pp run (0 = skip)")->check(CLI::Range(0, 1 << 16));
  app.add_option("-n,--n-gen", a->n, "Generated tokens per tg run (0 = skip)")->check(CLI::Range(0, 1 << 16));
  app.add_option("-d,--depth", a->depths,
                 "Positions already in the cache before each pp / tg run; a comma list runs each (0,1024,2048)")
      ->delimiter(',')
      ->check(CLI::Range(0, 1 << 20));
  app.add_option("-r,--repetitions", a->reps, "Runs of each test; the median is reported")->check(CLI::Range(1, 100));
  app.add_option("--q4-act", a->act, "Activations for int4 layers: auto, q8 (int8 dot products), f32")
      ->check(CLI::IsMember({"auto", "q8", "f32"}));
  app.add_option("--probe-mb", a->probe_mb, "Bandwidth probe buffer (MiB)")->check(CLI::Range(64, 1 << 16));
  app.add_flag("--no-probe", a->no_probe, "Skip the bandwidth probe");
  app.add_option("--seed", a->seed, "Seed of the random token ids");
  app.add_flag("--json", a->json_out, "Print one JSON object instead of the table");
  a->rt_flags = add_runtime_flags(app, "f32");
  app.add_option("--verify-k", a->verify_k,
                 "Instead of pp/tg: time one pass over k tokens (speculative verification) for each k, e.g. 1,2,4,8");
  app.add_option("--verify-depth", a->verify_depth, "Cache positions before the --verify-k passes")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  return [a] {
    if (!a->verify_k.empty()) {
      VerifyBenchArgs v{a->model, parse_verify_ks(a->verify_k), a->verify_depth, 16, a->reps,
                        a->rt_flags->threads, a->json_out, a->seed};
      return run_verify_bench(v, *a->rt_flags);
    }
    const int threads = a->rt_flags->threads > 0 ? a->rt_flags->threads : default_thread_count();
    kernels::BandwidthResult bw;
    if (!a->no_probe) bw = probe_bandwidth(threads, size_t(a->probe_mb) << 20);
    ops::Q4Act act = ops::Q4Act::kAuto;
    ops::parse_q4_act(a->act, &act);
    ops::set_q4_act(act);

    auto t_load = std::chrono::steady_clock::now();
    LoadOptions lo;
    lo.quiet = a->json_out;
    auto w = load_weights(a->model, lo);
    const double load_s = seconds_since(t_load);
    RuntimeOptions ro;
    apply_runtime_flags(*a->rt_flags, *w, ro);
    ro.n_threads = threads;
    const int max_depth = *std::max_element(a->depths.begin(), a->depths.end());
    ro.n_ctx = max_depth + std::max({a->p, a->n, 1});
    LlamaRuntime rt(*w, ro);
    const LlamaConfig& c = w->config;

    std::mt19937_64 rng(a->seed);
    std::uniform_int_distribution<int> tok(3, c.vocab_size - 1);
    std::vector<int> prompt(size_t(a->p));
    for (auto& t : prompt) t = tok(rng);
    int first = tok(rng);
    rt.eval(std::span<const int>(&first, 1), 0);  // warm-up: every weight page faults in here
    std::vector<DepthRun> runs = run_depths(*a, rt, prompt, first, rng);
    const Stat& pp = runs[0].pp;
    const Stat& tg = runs[0].tg;

    size_t weights = w->bytes_per_token() - size_t(c.hidden_size) * dtype_size(w->embed.dtype) + w->embed.nbytes;
    for (const auto& l : w->layers) weights += (l.attn_norm.size() + l.ffn_norm.size()) * sizeof(float);
    const size_t per_tok = w->bytes_per_token();
    const double gbps = double(per_tok) * tg.median() / 1e9;
    const size_t rss = peak_rss_bytes();
    const size_t kv = rt.kv().bytes();
    const ops::Q4Act dec = ops::q4_act_for_rows(1), pre = ops::q4_act_for_rows(std::max(a->p, 1));
    json j = {{"model", a->model},
              {"format", w->format},
              {"cpu", cpu_model_name()},
              {"isa", kernels::isa_name(kernels::active_isa())},
              {"threads", threads},
              {"q4_act", {{"decode", ops::q4_act_name(dec)}, {"prefill", ops::q4_act_name(pre)}}},
              {"kv_type", kv_types_label(ro)},
              {"kv_bytes_per_position", rt.kv().bytes_per_position()},
              {"gpu", rt.gpu() ? rt.gpu()->plan().describe() : "none"},
              {"load_seconds", load_s},
              {"weights_bytes", weights},
              {"bytes_per_token", per_tok},
              {"kv_cache_bytes", kv},
              {"peak_rss_bytes", rss},
              {"rss_over_weights_kv", double(rss) / double(weights + kv)}};
    if (a->p > 0) j["pp"] = stat_json(pp, a->p);
    if (a->n > 0) {
      j["tg"] = stat_json(tg, a->n);
      j["tg"]["weights_gbps"] = gbps;
    }
    j["depths"] = json::array();
    for (const DepthRun& d : runs) {
      json e = {{"depth", d.depth}};
      if (a->p > 0) e["pp"] = stat_json(d.pp, a->p);
      if (a->n > 0) e["tg"] = stat_json(d.tg, a->n);
      j["depths"].push_back(e);
    }
    if (!a->no_probe) {
      j["read_bandwidth_gbps"] = bw.median_gbps;
      j["read_bandwidth_best_gbps"] = bw.best_gbps;
      if (a->n > 0) j["tg"]["bandwidth_fraction"] = gbps / bw.median_gbps;
    }
    if (a->json_out) {
      std::printf("%s\n", j.dump().c_str());
      return 0;
    }
    std::printf("model: %s (%s), %s, %d threads, %s, int4 activations %s (decode) / %s (prefill), KV %s\n",
                a->model.c_str(), w->format.c_str(), cpu_model_name().c_str(), threads,
                kernels::isa_name(kernels::active_isa()), ops::q4_act_name(dec), ops::q4_act_name(pre),
                kv_types_label(ro).c_str());
    if (rt.gpu()) std::printf("gpu: %s\n", rt.gpu()->plan().describe().c_str());
    std::printf("| test          |          t/s | attention | runs |\n|---------------|--------------|-----------|------|\n");
    for (const DepthRun& d : runs) {
      const std::string at = d.depth ? cat(" @ d", d.depth) : std::string();
      if (a->p > 0)
        std::printf("| %-13s | %7.2f ± %4.2f | %8.1f%% | %4d |\n", cat("pp", a->p, at).c_str(), d.pp.median(),
                    d.pp.stdev(), 100 * d.pp.attn_share(), a->reps);
      if (a->n > 0)
        std::printf("| %-13s | %7.2f ± %4.2f | %8.1f%% | %4d |\n", cat("tg", a->n, at).c_str(), d.tg.median(),
                    d.tg.stdev(), 100 * d.tg.attn_share(), a->reps);
    }
    if (a->n > 0) {
      std::printf("weights read per token: %.3f GB -> %.2f GB/s at tg%d", double(per_tok) / 1e9, gbps, a->n);
      if (!a->no_probe)
        std::printf(" = %.0f%% of the measured read bandwidth (%.2f GB/s median, %.2f best, %d threads)",
                    100.0 * gbps / bw.median_gbps, bw.median_gbps, bw.best_gbps, threads);
      std::printf("\n");
    }
    std::printf("peak RSS %s = %.3f x (weights %s + KV cache %s); load %.1f s\n", gib(rss).c_str(),
                double(rss) / double(weights + kv), gib(weights).c_str(), gib(kv).c_str(), load_s);
    return 0;
  };
});

}  // namespace
}  // namespace metharme::cli
