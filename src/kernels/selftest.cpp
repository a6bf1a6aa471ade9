#include "kernels/selftest.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <sstream>

namespace metharme::kernels {

void SelfTest::compare(const std::string& kernel, const float* opt, const float* ref, size_t n, double rel_tol,
                       double abs_tol) {
  KernelCheck c{kernel, 0, true};
  for (size_t i = 0; i < n; ++i) {
    // The simulated mismatch moves the first output well past any tolerance.
    const double o = double(opt[i]) + (simulate_ && i == 0 ? 1.0 + std::fabs(double(ref[i])) : 0.0);
    const double e = std::fabs(o - double(ref[i]));
    if (!(e <= abs_tol + rel_tol * std::fabs(double(ref[i])))) c.pass = false;  // NaN fails too
    if (!(e <= c.max_err)) c.max_err = e;
  }
  checks_.push_back(std::move(c));
}

void SelfTest::compare_exact(const std::string& kernel, const void* opt, const void* ref, size_t bytes) {
  const auto* a = static_cast<const uint8_t*>(opt);
  const auto* b = static_cast<const uint8_t*>(ref);
  KernelCheck c{kernel, 0, true};
  for (size_t i = 0; i < bytes; ++i) {
    const int d = std::abs(int(a[i]) + (simulate_ && i == 0 ? 1 : 0) - int(b[i]));
    if (d) c.pass = false;
    c.max_err = std::max(c.max_err, double(d));  // in bytes' units: a flag more than a size
  }
  checks_.push_back(std::move(c));
}

bool SelfTest::pass() const {
  for (const auto& c : checks_)
    if (!c.pass) return false;
  return true;
}

std::span<KernelFamily* const> kernel_families() {
  static KernelFamily* const families[] = {&q4_family(), &dense_family(), &i8_family(), &kv_family()};
  return families;
}

bool simulated_mismatch(const KernelFamily& f, Isa isa) {
  const char* env = std::getenv("METHARME_SELFTEST_SIMULATE_MISMATCH");
  if (!env || !*env) return false;
  std::stringstream list(env);
  std::string item;
  while (std::getline(list, item, ',')) {
    std::string fam, name = item;
    if (const size_t colon = item.find(':'); colon != std::string::npos) {
      fam = item.substr(0, colon);
      name = item.substr(colon + 1);
    }
    if (!fam.empty() && fam != f.name) continue;
    Isa want;
    if (parse_isa(name.c_str(), &want) && want == isa) return true;
  }
  return false;
}

FamilyReport run_self_test(KernelFamily& f, Isa isa, bool simulate_mismatch) {
  SelfTest t(simulate_mismatch);
  const auto t0 = std::chrono::steady_clock::now();
  f.run(isa, t);
  const auto t1 = std::chrono::steady_clock::now();
  FamilyReport r;
  r.family = f.name;
  r.isa = isa;
  r.micros = std::chrono::duration<double, std::micro>(t1 - t0).count();
  r.pass = t.pass() && !t.checks().empty();
  r.checks = t.checks();
  return r;
}

namespace {

std::mutex g_selftest_mutex;
std::atomic<double> g_selftest_seconds{0};  // sum of the test_once runs

// Runs the self-test of f at isa once; returns whether it passed. Caller holds g_selftest_mutex.
bool test_once(KernelFamily& f, Isa isa) {
  std::atomic<int>& v = f.verdict[int(isa)];
  if (int s = v.load(std::memory_order_acquire)) return s == 1;
  const FamilyReport r = run_self_test(f, isa, simulated_mismatch(f, isa));
  g_selftest_seconds.fetch_add(r.micros * 1e-6);
  if (!r.pass) {
    const KernelCheck* bad = nullptr;
    for (const auto& c : r.checks)
      if (!c.pass) {
        bad = &c;
        break;
      }
    std::fprintf(stderr,
                 "metharme: warning: the %s %s kernels failed their self-test against the scalar ones (%s: max "
                 "error %.3g); using %s instead\n",
                 f.name, isa_name(isa), bad ? bad->kernel.c_str() : "no checks", bad ? bad->max_err : 0.0,
                 isa_name(Isa(int(isa) - 1)));
  }
  v.store(r.pass ? 1 : 2, std::memory_order_release);
  return r.pass;
}

}  // namespace

double self_test_seconds() { return g_selftest_seconds.load(); }

Isa checked_isa(KernelFamily& f) {
  Isa isa = active_isa();
  // Fast path: the verdicts are already known.
  for (;;) {
    if (isa == Isa::kScalar) return isa;
    const int s = f.verdict[int(isa)].load(std::memory_order_acquire);
    if (s == 0) break;
    if (s == 1) return isa;
    isa = Isa(int(isa) - 1);
  }
  std::lock_guard<std::mutex> lock(g_selftest_mutex);
  while (isa != Isa::kScalar && !test_once(f, isa)) isa = Isa(int(isa) - 1);
  return isa;
}

}  // namespace metharme::kernels
