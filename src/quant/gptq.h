// GPTQ (Frantar et al.) as GPTQ-for-LLaMa / AutoGPTQ implement it: Hessian of a linear's inputs,
// dead columns, damping, act-order, Cholesky of the inverse, column sweep with lazy block updates,
// dynamic or static groups.
#pragma once

#include <cstdint>
#include <vector>

#include "quant/quantizer.h"
#include "util/thread_pool.h"

namespace metharme::quant {

// Accumulates sum x x^T over the rows x of the inputs a linear sees; finish() turns it into
// GPTQ's H = 2/N * sum x x^T with N the number of calibration sequences.
class Hessian {
 public:
  Hessian() = default;
  explicit Hessian(int k);

  int k() const { return k_; }
  // x: [rows][k] row-major, the inputs of one sequence (counts as one of N).
  void add(const float* x, int rows, ThreadPool& pool);
  // Mirrors the accumulated upper triangle and scales by 2/N. Returns H [k][k] (moved out).
  std::vector<float> finish();
  int64_t sequences() const { return n_seq_; }

 private:
  int k_ = 0;
  int64_t n_seq_ = 0;
  std::vector<float> h_;  // [k][k], upper triangle accumulated (tile granularity)
};

// Quantizes W [N][K] (row-major fp32) with Hessian H [K][K] (destroyed). Bit-for-bit the
// reference's arithmetic order where it matters for results: groups of a dynamic grid that start
// inside a lazy block take their min/max from W as it was when that block started.
// `lapack_threads`: OpenBLAS threads for the Cholesky steps (1 = leave as is).
QuantizedLinear gptq_quantize(const float* W, int N, int K, std::vector<float>& H, const QuantConfig& c,
                              ThreadPool& pool, int lapack_threads = 1);

}  // namespace metharme::quant
