// Int4 products by row count, as the engine runs them (ops::linear: activation gather and int8
// quantization, then the dispatched kernel over tile pieces on a thread pool). For each matrix
// shape and thread count it times M = 1, 2, 4, 5, 8 (decode, continuous-batching steps, speculative
// verification) and the prefill M, and prints G multiply-adds/s per thread, each as a share of the
// prefill rate, and each step's time against the one-row step.
//
// The small-M products cycle through copies of the matrix (--mem-mb in all, beyond the last-level
// cache) so that every call streams its weights from DRAM, as a decode step does; the prefill
// product runs on one copy. The row counts alternate within each round (M = 1, 2, 4, 8, prefill,
// then again), so the drift of a shared machine hits them alike; each figure is the median round.
//
//   build/bench/q4_rows_bench [--shapes 7b|1b|NxK,...] [--threads 1,2] [--rows 1,2,4,5,8]
//                             [--prefill 512] [--rounds 5] [--isa avx2|avx512|scalar]
//                             [--group-size 128] [--act-order] [--mem-mb 384] [--clock wall|cpu]
//                             [--zeros random|8]
// --zeros 8 gives every group the zero point 8, as GGUF Q4_0 files have (the matrix is then
// flagged uniform, kernels/q4.h); the default draws them at random as GPTQ checkpoints have.
// --clock cpu times with the process's CPU time instead of the wall clock (per thread: CPU
// seconds are summed over threads), for a machine shared with other jobs.
// Shapes are N x K (output x input): 7b = 4096x4096 (q, k, v, o), 11008x4096 (gate, up),
// 4096x11008 (down); 1b = 2048x2048, 5632x2048, 2048x5632.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "kernels/isa.h"
#include "ops/linear.h"
#include "ops/q4_linear.h"
#include "util/half.h"
#include "util/thread_pool.h"

namespace metharme {
namespace {

struct Options {
  std::vector<std::pair<int, int>> shapes;  // N, K
  std::vector<int> threads{1, 2}, rows{1, 2, 4, 5, 8};
  int prefill = 512, rounds = 5, group_size = 128, mem_mb = 384;
  bool act_order = false;
  bool zero8 = false;      // --zeros 8
  bool cpu_clock = false;  // --clock cpu: process CPU time (threads x wall on an idle machine)
  kernels::Isa isa = kernels::active_isa();
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "q4_rows_bench: %s\nusage: q4_rows_bench [--shapes 7b|1b|NxK,...] [--threads 1,2] [--rows 1,2,4,5,8]\n"
               "       [--prefill 512] [--rounds 5] [--isa avx2|avx512|scalar] [--group-size 128] [--act-order]\n"
               "       [--mem-mb 384] [--clock wall|cpu] [--zeros random|8]\n",
               why);
  std::exit(2);
}

int parse_int(const std::string& s, int lo, int hi) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v < lo || v > hi) usage(("bad number '" + s + "'").c_str());
  return int(v);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  size_t a = 0;
  for (size_t b; (b = s.find(',', a)) != std::string::npos; a = b + 1) out.push_back(s.substr(a, b - a));
  out.push_back(s.substr(a));
  return out;
}

void add_shapes(Options& o, const std::string& list) {
  for (const std::string& s : split(list)) {
    if (s == "7b") {
      o.shapes.insert(o.shapes.end(), {{4096, 4096}, {11008, 4096}, {4096, 11008}});
    } else if (s == "1b") {
      o.shapes.insert(o.shapes.end(), {{2048, 2048}, {5632, 2048}, {2048, 5632}});
    } else {
      const size_t x = s.find('x');
      if (x == std::string::npos) usage(("bad shape '" + s + "'").c_str());
      o.shapes.emplace_back(parse_int(s.substr(0, x), 1, 1 << 16), parse_int(s.substr(x + 1), 1, 1 << 16));
    }
  }
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--act-order") {
      o.act_order = true;
      continue;
    }
    if (a == "--clock" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v != "cpu" && v != "wall") usage("--clock takes cpu or wall");
      o.cpu_clock = v == "cpu";
      continue;
    }
    if (a == "--zeros" && i + 1 < argc) {
      const std::string v = argv[++i];
      if (v != "random" && v != "8") usage("--zeros takes random or 8");
      o.zero8 = v == "8";
      continue;
    }
    if (i + 1 >= argc) usage(("missing value after " + a).c_str());
    const std::string v = argv[++i];
    if (a == "--shapes")
      add_shapes(o, v);
    else if (a == "--threads") {
      o.threads.clear();
      for (auto& s : split(v)) o.threads.push_back(parse_int(s, 1, 256));
    } else if (a == "--rows") {
      o.rows.clear();
      for (auto& s : split(v)) o.rows.push_back(parse_int(s, 1, 64));
    } else if (a == "--prefill")
      o.prefill = parse_int(v, 0, 4096);
    else if (a == "--rounds")
      o.rounds = parse_int(v, 1, 1000);
    else if (a == "--group-size")
      o.group_size = parse_int(v, 32, 1 << 16);
    else if (a == "--mem-mb")
      o.mem_mb = parse_int(v, 1, 1 << 16);
    else if (a == "--isa") {
      if (!kernels::parse_isa(v.c_str(), &o.isa)) usage(("unknown ISA '" + v + "'").c_str());
    } else
      usage(("unknown option " + a).c_str());
  }
  if (o.shapes.empty()) add_shapes(o, "7b");
  for (auto [n, k] : o.shapes)
    if (k % o.group_size != 0 || k % 8 != 0) usage("every K must be a multiple of 8 and of --group-size");
  return o;
}

// A random GPTQ checkpoint tensor of N x K (groups of gs; act-order: g_idx a random permutation of
// the rows' groups, as a desc_act checkpoint has).
struct Source {
  std::vector<uint32_t> qweight, qzeros;
  std::vector<uint16_t> scales;
  std::vector<int32_t> g_idx;
  ops::GptqSource src;
  Source(int N, int K, int gs, bool act_order, bool zero8) {
    std::mt19937_64 rng(uint64_t(N) * 31 + uint64_t(K));
    const int G = K / gs;
    qweight.resize(size_t(K / 8) * size_t(N));
    for (auto& v : qweight) v = uint32_t(rng());
    qzeros.resize(size_t(G) * size_t((N + 7) / 8));
    for (auto& v : qzeros) v = zero8 ? 0x77777777u : uint32_t(rng()) & 0x77777777u;  // + 1 (GPTQ v1)
    scales.resize(size_t(G) * size_t(N));
    for (auto& s : scales) s = f32_to_fp16(0.002f + 0.004f * float(rng() % 1000) / 1000.0f);
    src.n = N;
    src.k = K;
    src.n_groups = G;
    src.group_size = gs;
    src.qweight = qweight.data();
    src.qzeros = qzeros.data();
    src.scales = scales.data();
    src.name = "bench";
    if (act_order) {
      g_idx.resize(size_t(K));
      for (int k = 0; k < K; ++k) g_idx[size_t(k)] = k / gs;
      std::shuffle(g_idx.begin(), g_idx.end(), rng);
      src.g_idx = g_idx.data();
    }
  }
};

// Seconds of wall time, or of this process's CPU time (all threads; idle workers spin a while
// between jobs, so on a machine without other load this is threads x wall).
double now_s(bool cpu) {
  if (cpu) {
    timespec ts{};
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return double(ts.tv_sec) + 1e-9 * double(ts.tv_nsec);
  }
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// One shape at one thread count: the table rows.
void run_shape(const Options& o, int N, int K, int T) {
  const Source s(N, K, o.group_size, o.act_order, o.zero8);
  ThreadPool pool(T);
  std::vector<ops::Linear> mats;
  const auto one = ops::q4_repack(s.src, T);
  const size_t bytes = ops::q4_weight_bytes(*one);
  const int n_mats = int(std::max<size_t>(2, size_t(o.mem_mb) * (1u << 20) / bytes + 1));
  for (int i = 0; i < n_mats; ++i) {
    ops::Linear l;
    l.kind = ops::Linear::Kind::kQ4;
    l.n_out = N;
    l.n_in = K;
    l.q4 = i == 0 ? one : ops::q4_repack(s.src, T);
    mats.push_back(std::move(l));
  }
  std::vector<int> ms = o.rows;
  if (o.prefill > 0) ms.push_back(o.prefill);
  const int max_m = *std::max_element(ms.begin(), ms.end());
  std::vector<float> x(size_t(max_m) * size_t(K)), y(size_t(max_m) * size_t(N));
  std::mt19937 rng(7);
  std::normal_distribution<float> nd;
  for (auto& v : x) v = nd(rng);
  // Warm-up: every copy once (page faults, the kernel self-test, thread start).
  for (const auto& l : mats) ops::linear(l, x.data(), 1, y.data(), pool);
  std::vector<std::vector<double>> secs(ms.size());  // per M: seconds per product, one per round
  int next = 0;
  for (int r = 0; r < o.rounds; ++r)
    for (size_t i = 0; i < ms.size(); ++i) {
      const int M = ms[i];
      const bool prefill = o.prefill > 0 && i + 1 == ms.size();
      const int calls = prefill ? 1 : n_mats;
      const double t0 = now_s(o.cpu_clock);
      for (int c = 0; c < calls; ++c) {
        const ops::Linear& l = prefill ? mats[0] : mats[size_t(next++ % n_mats)];
        ops::linear(l, x.data(), M, y.data(), pool);
      }
      secs[i].push_back((now_s(o.cpu_clock) - t0) / calls);
    }
  std::vector<double> rate(ms.size()), t(ms.size());
  for (size_t i = 0; i < ms.size(); ++i) {
    t[i] = median(secs[i]);
    rate[i] = double(ms[i]) * N * K / t[i] / (o.cpu_clock ? 1 : T) * 1e-9;
  }
  const double pre = o.prefill > 0 ? rate.back() : 0;
  const auto one_row = std::find(ms.begin(), ms.end(), 1);
  const double t1 = one_row != ms.end() ? t[size_t(one_row - ms.begin())] : 0;
  for (size_t i = 0; i < ms.size(); ++i) {
    const bool prefill = o.prefill > 0 && i + 1 == ms.size();
    char share[16] = "-", vs1[16] = "-", gbs[16] = "-";
    if (pre > 0) std::snprintf(share, sizeof share, "%.0f%%", 100 * rate[i] / pre);
    if (t1 > 0 && !prefill) std::snprintf(vs1, sizeof vs1, "%.2fx", t[i] / t1);
    if (!prefill) std::snprintf(gbs, sizeof gbs, "%.1f", double(bytes) / t[i] * 1e-9);
    std::printf("| %dx%d | %d | %d%s | %.3f | %.1f | %s | %s | %s |\n", N, K, T, ms[i], prefill ? " (prefill)" : "",
                t[i] * 1e3, rate[i], share, vs1, gbs);
    std::fflush(stdout);
  }
}

}  // namespace
}  // namespace metharme

int main(int argc, char** argv) {
  using namespace metharme;
  const Options o = parse(argc, argv);
  if (!kernels::isa_supported(o.isa)) {
    std::printf("q4_rows_bench: this CPU lacks %s\n", kernels::isa_name(o.isa));
    return 77;
  }
  kernels::set_active_isa(o.isa);
  std::printf(
      "int4 products by rows: ISA %s, group size %d%s%s, %d round(s), median round, %s time; small-M products "
      "stream %d MB of copies from DRAM, prefill runs on one copy\n",
      kernels::isa_name(o.isa), o.group_size, o.act_order ? ", act-order" : "", o.zero8 ? ", zero point 8" : "",
      o.rounds, o.cpu_clock ? "process CPU" : "wall", o.mem_mb);
  std::printf(
      "| N x K | threads | M | %s per product | G multiply-adds/s per thread | of prefill | time vs M=1 | weight "
      "GB/s%s |\n",
      o.cpu_clock ? "CPU ms (all threads)" : "ms", o.cpu_clock ? " per CPU second" : "");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (auto [n, k] : o.shapes)
    for (int t : o.threads) run_shape(o, n, k, t);
  return 0;
}
