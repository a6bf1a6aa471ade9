#include "kernels/bandwidth.h"

#include <algorithm>
#include <chrono>
#include <cstring>

#include "kernels/isa.h"
#include "util/buffer.h"
#include "util/thread_pool.h"

namespace metharme::kernels {

uint64_t read_sum_scalar(const void* p, size_t n) {
  const auto* w = static_cast<const uint64_t*>(p);
  uint64_t a = 0, b = 0, c = 0, d = 0;
  for (size_t i = 0; i < n / 8; i += 4) {
    a += w[i];
    b += w[i + 1];
    c += w[i + 2];
    d += w[i + 3];
  }
  return a + b + c + d;
}

BandwidthResult measure_read_bandwidth(int n_threads, size_t bytes, int passes) {
  n_threads = std::max(1, n_threads);
  const size_t slice = bytes / size_t(n_threads) / 4096 * 4096;
  PageBuffer buf(slice * size_t(n_threads));
  ThreadPool pool(n_threads);
  // Each thread touches its own slice first (pages land near the thread that reads them).
  pool.run(n_threads, [&](int t, int) { std::memset(buf.data() + size_t(t) * slice, 1, slice); });
  auto read = active_isa() >= Isa::kAvx2 ? read_sum_avx2 : read_sum_scalar;
  BandwidthResult r;
  volatile uint64_t sink = 0;
  for (int p = 0; p < passes; ++p) {
    auto t0 = std::chrono::steady_clock::now();
    pool.run(n_threads, [&](int t, int) { sink = sink + read(buf.data() + size_t(t) * slice, slice); });
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    r.passes.push_back(double(slice * size_t(n_threads)) / s / 1e9);
  }
  std::vector<double> v = r.passes;
  std::sort(v.begin(), v.end());
  r.median_gbps = v[v.size() / 2];
  r.best_gbps = v.back();
  return r;
}

}  // namespace metharme::kernels
