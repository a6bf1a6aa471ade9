// Memory read bandwidth probe: the denominator for "how close to the hardware is decode".
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace metharme::kernels {

// Sums n bytes (n a multiple of 128) as 64-bit words with wide loads; the sum keeps the reads alive.
uint64_t read_sum_scalar(const void* p, size_t n);
uint64_t read_sum_avx2(const void* p, size_t n);

struct BandwidthResult {
  double median_gbps = 0, best_gbps = 0;
  std::vector<double> passes;  // GB/s (1e9 bytes/s) of each pass
};

// Reads a freshly touched buffer of `bytes` with `n_threads` threads (each its own contiguous
// slice), `passes` times.
BandwidthResult measure_read_bandwidth(int n_threads, size_t bytes, int passes);

}  // namespace metharme::kernels
